// A workflow's graph laid out in layers: pure functions, no DOM, no Preact (so a test can
// import this module alone).
//
// A node's layer is its depth: the longest path from a root (a node without parents), so
// every edge goes from a lower layer to a higher one. Layers are columns, left to right;
// within a layer, nodes are ordered by where their parents are (the mean of their rows),
// which keeps most edges short and uncrossed. O(nodes + edges) plus one sort per layer.

// Above this many nodes the page shows a table instead of a drawing.
export const MAX_DRAWN = 300;

export const BOX = { width: 168, height: 44, gapX: 56, gapY: 14, pad: 8 };

// The edges of a workflow's nodes (proto3 JSON WorkflowNodeInfo): `dependsOn` (kind
// "depends"), a spawned child from its spawner ("spawned"), and a `joinSpawned` node
// from its parents' spawned children ("join"). Names that are no node are ignored;
// repeated dependencies count once.
export function edgesOf(nodes) {
  const names = new Set(nodes.map((n) => n.name));
  const spawned = new Map(); // spawner → its children's names
  for (const n of nodes) {
    if (n.spawnedBy && names.has(n.spawnedBy)) {
      if (!spawned.has(n.spawnedBy)) spawned.set(n.spawnedBy, []);
      spawned.get(n.spawnedBy).push(n.name);
    }
  }
  const edges = [];
  for (const n of nodes) {
    const parents = [...new Set(n.dependsOn || [])].filter((p) => names.has(p) && p !== n.name);
    for (const p of parents) edges.push({ from: p, to: n.name, kind: "depends" });
    if (n.spawnedBy && names.has(n.spawnedBy)) {
      edges.push({ from: n.spawnedBy, to: n.name, kind: "spawned" });
    }
    if (n.joinSpawned) {
      for (const p of parents) {
        for (const child of spawned.get(p) || []) edges.push({ from: child, to: n.name, kind: "join" });
      }
    }
  }
  return edges;
}

// names (in creation order) + edges → {positions: Map name → {x, y, layer, row},
// layers: [[name, …], …], width, height}. A cycle (the broker refuses them) cannot hang
// it: nodes on one go in a last layer of their own.
export function layout(names, edges, box = BOX) {
  const parents = new Map(names.map((n) => [n, []]));
  const children = new Map(names.map((n) => [n, []]));
  for (const { from, to } of edges) {
    if (from === to || !children.has(from) || !parents.has(to)) continue;
    parents.get(to).push(from);
    children.get(from).push(to);
  }
  // Kahn's topological order; a node's depth is settled once its last parent is.
  const waiting = new Map(names.map((n) => [n, parents.get(n).length]));
  const depth = new Map();
  const order = names.filter((n) => waiting.get(n) === 0);
  for (const n of order) depth.set(n, 0);
  for (let i = 0; i < order.length; i++) {
    const n = order[i];
    for (const child of children.get(n)) {
      depth.set(child, Math.max(depth.get(child) ?? 0, depth.get(n) + 1));
      waiting.set(child, waiting.get(child) - 1);
      if (waiting.get(child) === 0) order.push(child);
    }
  }
  let deepest = -1;
  for (const n of order) deepest = Math.max(deepest, depth.get(n));
  const placed = new Set(order);
  for (const n of names) if (!placed.has(n)) depth.set(n, deepest + 1);

  const layers = [];
  const creation = new Map(names.map((n, i) => [n, i]));
  for (const n of names) {
    const d = depth.get(n);
    while (layers.length <= d) layers.push([]);
    layers[d].push(n);
  }
  // Rows: the first layer in creation order; each next one by its parents' mean row.
  const row = new Map();
  for (const layer of layers) {
    const key = new Map(layer.map((n) => {
      const rows = parents.get(n).filter((p) => row.has(p)).map((p) => row.get(p));
      return [n, rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity];
    }));
    layer.sort((a, b) => key.get(a) - key.get(b) || creation.get(a) - creation.get(b));
    layer.forEach((n, i) => row.set(n, i));
  }

  const positions = new Map();
  let rows = 0;
  layers.forEach((layer, l) => {
    rows = Math.max(rows, layer.length);
    layer.forEach((n, r) => positions.set(n, {
      x: box.pad + l * (box.width + box.gapX),
      y: box.pad + r * (box.height + box.gapY),
      layer: l,
      row: r,
    }));
  });
  const width = 2 * box.pad + Math.max(0, layers.length * (box.width + box.gapX) - box.gapX);
  const height = 2 * box.pad + Math.max(0, rows * (box.height + box.gapY) - box.gapY);
  return { positions, layers, width, height };
}

// An SVG path from the right side of one box to the left side of another.
export function edgePath(from, to, box = BOX) {
  const x1 = from.x + box.width;
  const y1 = from.y + box.height / 2;
  const x2 = to.x;
  const y2 = to.y + box.height / 2;
  const mid = (x1 + x2) / 2;
  return `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
}
