// A time-series chart (uPlot) in a box of fixed size: new data redraws the canvas and
// never moves the page. The figure's text (caption, data-* attributes) says what the
// canvas shows, for screen readers and tests alike.

import { useEffect, useRef } from "preact/hooks";
import { html } from "./html.js";

// uPlot (145 KB) is loaded when the first chart is drawn, not with every page.
let uPlotModule = null;
const loadUPlot = () => (uPlotModule ||= import("uplot").then((m) => m.default));

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];
const HEIGHT = 180;

export function Chart({ title, xs, series, unit, testid, summary }) {
  const box = useRef(null);
  const plot = useRef(null);

  const data = useRef(null);
  data.current = [xs, ...series.map((s) => s.values)];

  useEffect(() => {
    let alive = true;
    let resize = null;
    loadUPlot().then((uPlot) => {
      if (!alive) return;
      plot.current = create(uPlot);
      resize = () => plot.current?.setSize({ width: Math.max(box.current.clientWidth, 240), height: HEIGHT });
      addEventListener("resize", resize);
    });
    return () => {
      alive = false;
      if (resize) removeEventListener("resize", resize);
      plot.current?.destroy();
      plot.current = null;
    };
  }, []);

  const create = (uPlot) => {
    const width = Math.max(box.current.clientWidth, 240);
    return new uPlot(
      {
        width,
        height: HEIGHT,
        legend: { show: true, live: false },
        cursor: { show: true, drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{}, { size: 56, values: (u, ticks) => ticks.map((t) => `${fmt(t)}${unit}`) }],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label, stroke: COLORS[i], width: 2, spanGaps: false, points: { show: true, size: 4 },
          })),
        ],
      },
      data.current,
      box.current,
    );
  };

  useEffect(() => {
    plot.current?.setData(data.current);
  }, [xs, series]);

  const points = series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0);
  return html`
    <figure class="chart" data-testid=${testid} data-points=${points} aria-label=${`${title}: ${summary}`}>
      <figcaption><strong>${title}</strong> <span class="muted">${summary}</span></figcaption>
      <div class="plot" ref=${box}></div>
    </figure>`;
}

function fmt(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
