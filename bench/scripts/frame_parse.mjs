// What a browser pays to parse one `update` frame of 20 widgets, as livedash sends it and
// in a compact form (widget indices announced in the snapshot, `window_end` and `stale`
// once per frame): nanoseconds per JSON.parse, three rounds of 200,000 each.
//
// node bench/scripts/frame_parse.mjs
const widgets = [];
for (let i = 0; i < 20; i++) {
  widgets.push({
    widget_id: `0b7c3f2e-9a1d-4c5e-8f6a-1b2c3d4e5f${String(i).padStart(2, "0")}`,
    value: 123456.5 + i,
    window_end: 1764512346000,
    latest_event_time: 1764512345432,
    stale: false,
  });
}
const full = JSON.stringify({ type: "update", seq: 12345, sent_at: 1764512345678, widgets });
const compact = JSON.stringify({
  type: "update",
  seq: 12345,
  sent_at: 1764512345678,
  window_end: 1764512346000,
  v: widgets.map((w, i) => [i, w.value, w.latest_event_time]),
});

function nsPerParse(text, n) {
  let seen = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) seen += JSON.parse(text).seq;
  const ns = Number(process.hrtime.bigint() - start) / n;
  if (seen !== n * 12345) throw new Error("parse went wrong");
  return ns;
}

for (let round = 0; round < 3; round++) {
  const a = nsPerParse(full, 200000);
  const b = nsPerParse(compact, 200000);
  console.log(
    `as sent ${full.length} bytes: ${a.toFixed(0)} ns; compact ${compact.length} bytes: ${b.toFixed(0)} ns (${(b / a).toFixed(2)}x)`,
  );
}
