// A small SVG chart of /activity buckets: completed (green) and failed (red) stacked per bucket,
// created as a line. No library: a few rectangles and a polyline.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const child of children) el.append(child);
  return el;
}

export function activityChart(buckets, bucketSeconds) {
  const width = 900;
  const height = 140;
  const top = 12;
  const bottom = 20;
  const peak = Math.max(1, ...buckets.map((b) => Math.max(b.created, b.completed)));
  const slot = width / buckets.length;
  const y = (n) => height - bottom - (n / peak) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  chart.append(svg("title", {}, `per ${bucketSeconds} s: created, completed, failed`));
  buckets.forEach((b, i) => {
    const x = i * slot + 2;
    const ok = b.completed - b.failed;
    const label = `${b.start}: ${b.created} created, ${b.completed} completed, ${b.failed} failed`;
    const group = svg("g", {}, svg("title", {}, label));
    group.append(svg("rect", { x, y: y(ok), width: slot - 4, height: height - bottom - y(ok), class: "ok" }));
    group.append(svg("rect", { x, y: y(b.completed), width: slot - 4, height: y(ok) - y(b.completed), class: "failed" }));
    chart.append(group);
  });
  const points = buckets.map((b, i) => `${i * slot + slot / 2},${y(b.created)}`).join(" ");
  chart.append(svg("polyline", { points, class: "created" }));
  chart.append(svg("text", { x: 2, y: 10, class: "axis" }, `${peak}`));
  chart.append(svg("line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, class: "axis" }));
  const first = new Date(buckets[0].start);
  chart.append(svg("text", { x: 2, y: height - 4, class: "axis" }, first.toLocaleTimeString()));
  chart.append(svg("text", { x: width - 2, y: height - 4, class: "axis end" }, "now"));
  return chart;
}
