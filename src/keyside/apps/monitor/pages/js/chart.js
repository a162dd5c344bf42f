// A line chart as inline SVG built with DOM calls (no canvas, so text stays selectable and
// the chart scales with the panel). Colors come from the stylesheet through class names.

import { svgEl } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 260;
const MARGIN = { top: 14, right: 16, bottom: 28, left: 52 };
const Y_TICKS = 4;

/** Return a step of 1, 2, 2.5 or 5 times a power of ten that splits `span` into about `count` parts. */
export function niceStep(span, count) {
  if (!(span > 0)) {
    return 1;
  }
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw) * power;
  return step;
}

/**
 * Build an <svg> line chart of `points` ([{date: Date, value: number}], oldest first).
 * `label` is the accessible name, e.g. "Unemployment Rate, Percent, 2015 to 2025".
 */
export function lineChart(points, { label, formatValue = (v) => String(v) }) {
  const values = points.map((p) => p.value);
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (min === max) {
    min -= 1;
    max += 1;
  }
  const step = niceStep(max - min, Y_TICKS);
  const low = Math.floor(min / step) * step;
  const high = Math.ceil(max / step) * step;
  const t0 = points[0].date.getTime();
  const t1 = points[points.length - 1].date.getTime();

  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (date) => MARGIN.left + (t1 === t0 ? plotWidth : ((date.getTime() - t0) / (t1 - t0)) * plotWidth);
  const y = (value) => MARGIN.top + plotHeight - ((value - low) / (high - low)) * plotHeight;

  const svg = svgEl("svg", {
    class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  }, [svgEl("title", {}, [label])]);

  const grid = svgEl("g", { class: "chart-grid" });
  for (let value = low; value <= high + step / 2; value += step) {
    const gy = y(value).toFixed(1);
    grid.append(svgEl("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: gy, y2: gy }));
    grid.append(svgEl("text", { x: MARGIN.left - 8, y: gy, "text-anchor": "end", "dominant-baseline": "middle" },
      [formatValue(Number(value.toFixed(6)))]));
  }
  svg.append(grid);

  const axis = svgEl("g", { class: "chart-axis" });
  for (const date of yearTicks(points[0].date, points[points.length - 1].date)) {
    axis.append(svgEl("text", { x: x(date).toFixed(1), y: HEIGHT - 8, "text-anchor": "middle" },
      [String(date.getUTCFullYear())]));
  }
  svg.append(axis);

  const d = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.date).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
  svg.append(svgEl("path", { class: "chart-line", d, fill: "none" }));
  const last = points[points.length - 1];
  svg.append(svgEl("circle", { class: "chart-last", cx: x(last.date).toFixed(1), cy: y(last.value).toFixed(1), r: 4 }));
  return svg;
}

// About five January-first ticks between two dates.
function yearTicks(start, end) {
  const first = start.getUTCFullYear() + 1;
  const last = end.getUTCFullYear();
  if (last < first) {
    return [];
  }
  const every = Math.max(1, Math.ceil((last - first + 1) / 5));
  const ticks = [];
  for (let year = first; year <= last; year += every) {
    ticks.push(new Date(Date.UTC(year, 0, 1)));
  }
  return ticks;
}
