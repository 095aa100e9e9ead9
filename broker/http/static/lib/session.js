// Who the caller is (SystemService.GetCaller) and what its roles allow.
//
// The dashboard offers only what `may` allows; the broker still decides every call
// (queue limits, task ownership), so a refused call shows the broker's message.

let current = null;

export function setCaller(caller) {
  current = caller;
}

export function caller() {
  return current;
}

// may("TaskService/CancelTask")
export function may(method) {
  return Boolean(current?.methods?.includes(`taskyard.v1.${method}`));
}

// True when the caller sees only the tasks it created (a submitter).
export function ownTasksOnly() {
  return Boolean(current?.ownTaskMethods?.includes("taskyard.v1.TaskService/ListTasks"));
}
