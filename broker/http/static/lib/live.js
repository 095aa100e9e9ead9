// Data that follows the event stream at a bounded rate.
//
// A page loads its data once, then again whenever matching events arrived, but at most
// once per `every` milliseconds: at full broker speed (thousands of events a second) a
// page still fetches and renders about once a second, and stays responsive. `poll`
// refreshes without events too (ages, rates), and a gap in the stream always refetches.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { GAP, hub } from "./events.js";

export function useLive(load, deps, { match = () => true, every = 1000, poll = 0 } = {}) {
  const [state, setState] = useState({ data: null, error: null, loaded: false });
  const kick = useRef(() => {});

  useEffect(() => {
    let alive = true;
    let dirty = true;
    let busy = false;
    let last = 0;
    const tick = async () => {
      const now = Date.now();
      const due = dirty || (poll && now - last >= poll);
      if (!due || busy || now - last < every) return;
      dirty = false;
      busy = true;
      last = now;
      try {
        const data = await load();
        if (alive) setState({ data, error: null, loaded: true });
      } catch (error) {
        if (alive) setState((s) => ({ data: s.data, error, loaded: true }));
      } finally {
        busy = false;
      }
    };
    kick.current = () => {
      dirty = true;
      last = 0;
      tick();
    };
    const unsubscribe = hub.subscribe((batch) => {
      if (batch === GAP || batch.some(match)) dirty = true;
    });
    const timer = setInterval(tick, Math.min(every, 250));
    tick();
    return () => {
      alive = false;
      clearInterval(timer);
      unsubscribe();
    };
  }, deps);

  const reload = useCallback(() => kick.current(), []);
  return { ...state, reload };
}

// A value from events, committed to the page at most once per `every` milliseconds.
export function useThrottled(initial, every = 200) {
  const [value, setValue] = useState(initial);
  const pending = useRef(undefined);
  useEffect(() => {
    const timer = setInterval(() => {
      if (pending.current !== undefined) {
        setValue(pending.current);
        pending.current = undefined;
      }
    }, every);
    return () => clearInterval(timer);
  }, [every]);
  const push = useCallback((next) => {
    pending.current = next;
  }, []);
  return [value, push, setValue];
}
