// livedash web UI: the dashboard list (with import), the widget editor, and the start
// of the page. Loaded after charts.js and app.js.
'use strict';

// ---- dashboard list --------------------------------------------------------------------

async function showList() {
  $('#title').textContent = 'Dashboards';
  setStatus('', '');
  const error = h('p', { class: 'error', role: 'alert' });
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const d = await api('POST', '/dashboards', { name: name.value.trim(), layout: { items: {} }, widgets: [] });
      go('/d/' + d.dashboard_id);
    } catch (err) { error.textContent = err.message; }
  } }, h('label', {}, 'New dashboard name', name), h('button', { class: 'primary', type: 'submit' }, 'Create dashboard'));
  const list = h('ul', { class: 'list', 'aria-label': 'dashboards' });
  const file = h('input', { type: 'file', accept: 'application/json,.json', onchange: async () => {
    error.textContent = '';
    try { go('/d/' + (await importDashboard(JSON.parse(await file.files[0].text()))).dashboard_id); }
    catch (err) { error.textContent = 'Import failed: ' + err.message; }
    file.value = '';
  } });
  const imports = h('div', { class: 'row' }, h('label', {}, 'Import a dashboard (JSON from Export)', file));
  main.replaceChildren(h('h1', {}, 'Dashboards'), form, imports, error, list);
  let dashboards;
  try { dashboards = await api('GET', '/dashboards'); } catch (err) { error.textContent = err.message; return; }
  if (dashboards.length === 0) list.append(h('li', { class: 'empty' }, 'No dashboards yet. Create one above.'));
  for (const d of dashboards) {
    list.append(h('li', {},
      h('a', { href: '/d/' + d.dashboard_id, 'data-nav': true }, d.name),
      h('span', { class: 'empty' }, d.widgets.length + ' widgets'),
      h('button', { type: 'button', onclick: async () => {
        const n = prompt('New name', d.name);
        if (!n) return;
        try { await api('PUT', '/dashboards/' + d.dashboard_id, { name: n.trim() }); showList(); } catch (err) { error.textContent = err.message; }
      } }, 'Rename'),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm('Delete dashboard "' + d.name + '"?')) return;
        try { await api('DELETE', '/dashboards/' + d.dashboard_id); showList(); } catch (err) { error.textContent = err.message; }
      } }, 'Delete')));
  }
}


// Creates a dashboard from an exported file: its widgets get new ids, and the layout
// follows them.
async function importDashboard(file) {
  if (!file || typeof file.name !== 'string' || !Array.isArray(file.widgets)) throw new Error('not a livedash dashboard file (name and widgets are missing)');
  const specs = file.widgets.map(({ widget_id, dashboard_id, ...spec }) => spec);
  const layout = file.layout && typeof file.layout === 'object' ? file.layout : {};
  const made = await api('POST', '/dashboards', { name: file.name, layout: { ...layout, items: {} }, widgets: specs });
  const items = {};
  file.widgets.forEach((w, i) => {
    const placed = layout.items && layout.items[w.widget_id];
    if (placed && made.widgets[i]) items[made.widgets[i].widget_id] = placed;
  });
  if (Object.keys(items).length) await api('PUT', '/dashboards/' + made.dashboard_id, { name: made.name, layout: { ...layout, items } });
  return made;
}

// ---- the widget editor ---------------------------------------------------------------

DashboardView.prototype.editWidget = async function editWidget(w) {
    const dialog = $('#widget-dialog');
    const form = $('#widget-form');
    const err = $('#widget-error');
    err.textContent = '';
    form.reset();
    // Fields that do not apply to the chart kind are hidden: a table lists the other
    // widgets' values and has no metric of its own; min and max are a gauge's.
    const kindFields = () => {
      const kind = form.elements.chart.value;
      for (const label of form.querySelectorAll('[data-for]')) {
        const hide = (label.dataset.for === 'metric' && kind === 'table') || (label.dataset.for === 'gauge' && kind !== 'gauge')
          || (label.dataset.for === 'group' && kind === 'table');
        label.hidden = hide;
        for (const input of label.querySelectorAll('input, select')) input.disabled = hide;
      }
    };
    form.elements.chart.onchange = kindFields;
    form.oninput = () => { err.textContent = ''; };
    $('#widget-dialog-title').textContent = w ? 'Edit widget' : 'Add widget';
    if (w) {
      const cfg = w.display_config || {};
      const set = (n, v) => { if (v !== undefined && v !== null) form.elements[n].value = v; };
      set('metric_name', w.metric_name); set('aggregation', w.aggregation);
      set('window_seconds', w.window_seconds); set('refresh_interval_seconds', w.refresh_interval_seconds);
      set('filter', Object.entries(w.filter || {}).map(([k, v]) => k + '=' + v).join(', '));
      set('group_by', w.group_by); set('top', w.top);
      for (const k of ['chart', 'title', 'unit', 'color', 'warn', 'crit', 'min', 'max']) set(k, cfg[k]);
    }
    kindFields();
    api('GET', '/api/metric-names').then((names) => {
      $('#metric-names').replaceChildren(...names.map((n) => h('option', { value: n })));
    }).catch(() => {});
    form.onsubmit = async (e) => {
      e.preventDefault();
      err.textContent = '';
      const v = (n) => form.elements[n].value.trim();
      const num = (n) => (v(n) === '' ? undefined : Number(v(n)));
      const kind = v('chart');
      const problem = (() => {
        if (kind !== 'table' && !/^[A-Za-z0-9_.:\/-]+$/.test(v('metric_name'))) return 'Metric: letters, digits and _ . : / - only';
        const refresh = num('refresh_interval_seconds');
        if (!(refresh >= 0.1 && refresh <= 3600)) return 'Refresh: from 0.1 to 3600 seconds';
        const [warn, crit] = [num('warn'), num('crit')];
        if (warn !== undefined && crit !== undefined && !(warn < crit)) return 'Warning at must be below Critical at';
        if (kind === 'gauge' && !(num('min') < num('max'))) return 'Gauge min must be below Gauge max';
        if (kind === 'table') return null;
        const grouped = v('group_by') !== '';
        if (grouped && !/^[A-Za-z0-9_.:\/-]+$/.test(v('group_by'))) return 'Group by: a tag key (letters, digits and _ . : / -)';
        if (!grouped && v('top') !== '') return 'Top needs Group by';
        if (grouped && v('top') !== '' && !(Number.isInteger(num('top')) && num('top') >= 1 && num('top') <= 50)) return 'Top: a whole number from 1 to 50';
        if (grouped && v('aggregation') === 'histogram') return 'A histogram cannot be grouped: use a filter per tag value';
        if (kind === 'heatmap' && v('aggregation') !== 'histogram') return 'A heatmap shows a histogram: choose that aggregation';
        if (v('aggregation') === 'histogram' && kind !== 'heatmap') return 'A histogram is shown as a heatmap';
        if (kind === 'bars' && !grouped) return 'A bar list shows a grouped widget: set Group by';
        return null;
      })();
      if (problem) { err.textContent = problem; return; }
      const filter = {};
      for (const part of v('filter').split(',').map((s) => s.trim()).filter(Boolean)) {
        const at = part.indexOf('=');
        if (at < 1) { err.textContent = 'Tag filter entries are key=value, separated by commas'; return; }
        filter[part.slice(0, at).trim()] = part.slice(at + 1).trim();
      }
      const display = { chart: v('chart'), color: v('color') };
      if (v('title')) display.title = v('title');
      if (v('unit')) display.unit = v('unit');
      for (const k of kind === 'gauge' ? ['warn', 'crit', 'min', 'max'] : ['warn', 'crit']) if (num(k) !== undefined) display[k] = num(k);
      const spec = kind === 'table'
        ? { metric_name: TABLE_METRIC, aggregation: 'count', window_seconds: 60, refresh_interval_seconds: num('refresh_interval_seconds'), filter: {}, display_config: display }
        : {
          metric_name: v('metric_name'), aggregation: v('aggregation'),
          window_seconds: Math.round(num('window_seconds')), refresh_interval_seconds: num('refresh_interval_seconds'),
          filter, display_config: display, group_by: v('group_by') || null, top: v('group_by') && v('top') ? num('top') : null,
        };
      const body = w ? { update: [{ widget_id: w.widget_id, ...spec }] } : { add: [spec] };
      try {
        this.setDashboard(await api('PATCH', '/dashboards/' + this.id + '/widgets', body));
        dialog.close();
      } catch (ex) { err.textContent = ex.message; }
    };
    $('#widget-cancel').onclick = () => dialog.close();
    dialog.showModal();
};

route();
