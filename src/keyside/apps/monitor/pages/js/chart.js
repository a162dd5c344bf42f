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
  for (const tick of timeTicks(points[0].date, points[points.length - 1].date)) {
    axis.append(svgEl("text", { x: x(tick.date).toFixed(1), y: HEIGHT - 8, "text-anchor": "middle" }, [tick.label]));
  }
  svg.append(axis);

  const d = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.date).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
  svg.append(svgEl("path", { class: "chart-line", d, fill: "none" }));
  const last = points[points.length - 1];
  svg.append(svgEl("circle", { class: "chart-last", cx: x(last.date).toFixed(1), cy: y(last.value).toFixed(1), r: 4 }));
  return svg;
}

// Ticks on the time axis: about TIME_TICKS first days of a year, or of a month when the data
// covers less than two years. Returns [{date, label}].
const TIME_TICKS = 5;

function timeTicks(start, end) {
  if (end.getUTCFullYear() - start.getUTCFullYear() >= 2) {
    const first = start.getUTCFullYear() + 1;
    const every = Math.max(1, Math.ceil((end.getUTCFullYear() - first + 1) / TIME_TICKS));
    return stepTicks(Date.UTC(first, 0, 1), end, (date) => Date.UTC(date.getUTCFullYear() + every, 0, 1),
      (date) => String(date.getUTCFullYear()));
  }
  const months = (end.getUTCFullYear() - start.getUTCFullYear()) * 12 + end.getUTCMonth() - start.getUTCMonth();
  const every = Math.max(1, Math.ceil(months / TIME_TICKS));
  const label = (date) => date.toLocaleDateString(undefined, { month: "short", year: "numeric", timeZone: "UTC" });
  const next = (date) => Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + every, 1);
  const firstMonth = Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), 1);
  return stepTicks(firstMonth < start.getTime() ? next(new Date(firstMonth)) : firstMonth, end, next, label);
}

function stepTicks(firstTime, end, nextTime, label) {
  const ticks = [];
  for (let time = firstTime; time <= end.getTime(); time = nextTime(new Date(time))) {
    const date = new Date(time);
    ticks.push({ date, label: label(date) });
  }
  return ticks;
}
