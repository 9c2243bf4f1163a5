// Draws a run document (docs/dashboard.md) as plain SVG and HTML: used by the live page
// (which polls /api/run) and by report.html (which carries the document inline). No
// library, no network: everything here ships inside the epochal binary.
(function () {
  'use strict';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Okabe-Ito, as the SVG files use (src/report/svg_plot.h).
  const BLUE = '#0072B2', VERMILLION = '#D55E00', GREEN = '#009E73', ORANGE = '#E69F00';
  const SKY = '#56B4E9', PURPLE = '#CC79A7', BLACK = '#000000', YELLOW = '#F0E442';
  const PALETTE = [BLUE, ORANGE, PURPLE, GREEN, SKY, VERMILLION, YELLOW, BLACK];
  const TERM_COLORS = {timing: BLUE, dropout: ORANGE, batchnorm: PURPLE, regularization: ORANGE,
                       data: GREEN};
  const TERM_LABELS = {
    timing: 'timing: training loss averaged during the epoch',
    dropout: 'dropout: dropout and L2, in training only',
    batchnorm: 'batch norm: running instead of batch statistics',
    regularization: 'regularization: dropout, L2 and batch norm',
    data: 'data: validation set vs. training probe',
  };
  const MAX_LINE_POINTS = 2000;

  function svg(tag, attrs, parent, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, attrs, parent, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  const finite = Number.isFinite;
  function fixed(v, d) { return finite(v) ? v.toFixed(d) : '-'; }
  function signed(v, d) { return finite(v) ? (v >= 0 ? '+' : '') + v.toFixed(d) : '-'; }

  // Ticks at multiples of 1, 2 or 5 x 10^k covering [lo, hi].
  function axis(lo, hi, maxIntervals, minStep) {
    if (!(hi > lo)) {
      const d = Math.abs(lo) * 0.1 || 1;
      lo -= d;
      hi += d;
    }
    const raw = (hi - lo) / maxIntervals;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = 10 * mag;
    for (const m of [1, 2, 5]) {
      if (m * mag >= raw * (1 - 1e-9)) {
        step = m * mag;
        break;
      }
    }
    if (minStep && step < minStep) step = minStep;
    const first = Math.floor(lo / step + 1e-9), last = Math.ceil(hi / step - 1e-9);
    const ticks = [];
    for (let i = first; i <= last; ++i) ticks.push(Number((i * step).toPrecision(12)));
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return {lo: first * step, hi: last * step, ticks: ticks, decimals: decimals};
  }

  function textWidth(text, size) { return text.length * size * 0.56; }

  // A chart panel: lines (points [x, y]) and stacked bars (points [x, y, se]) on linear
  // axes, with a title, axis labels, gridlines and a legend below the plot.
  function chart(parent, spec) {
    const W = spec.width || 900, plotH = spec.height || 250;
    const left = 76, right = 24, top = 40, plotW = W - left - right;
    const barWidth = spec.barWidth || 0.6;
    const xs = (spec.xInclude || []).slice(), ys = (spec.yInclude || []).slice();
    const pos = {}, neg = {};
    let hasData = false;
    for (const s of spec.series) {
      for (const p of s.points) {
        if (!finite(p[0]) || !finite(p[1])) continue;
        hasData = true;
        if (s.noRange) continue;
        if (s.kind === 'bar') {
          const e = finite(p[2]) ? p[2] : 0;
          const key = String(p[0]);
          const stack = p[1] >= 0 ? pos : neg;
          const end = (stack[key] || 0) + p[1];
          stack[key] = end;
          xs.push(p[0] - barWidth / 2, p[0] + barWidth / 2);
          ys.push(0, end - e, end + e);
        } else {
          xs.push(p[0]);
          ys.push(p[1]);
        }
      }
    }
    const x = axis(xs.length ? Math.min(...xs) : 0, xs.length ? Math.max(...xs) : 1, 8,
                   spec.integerX ? 1 : 0);
    const yLo = ys.length ? Math.min(...ys) : 0, yHi = ys.length ? Math.max(...ys) : 1;
    // A little room around the data, but never across 0 (bars start there).
    const pad = (yHi - yLo) * 0.04;
    const y = axis(yLo >= 0 && yLo - pad < 0 ? 0 : yLo - pad,
                   yHi <= 0 && yHi + pad > 0 ? 0 : yHi + pad, 6, 0);
    const px = v => left + (v - x.lo) / (x.hi - x.lo) * plotW;
    const py = v => top + plotH - (v - y.lo) / (y.hi - y.lo) * plotH;

    const legend = spec.series.filter(s => s.label);
    const columns = legend.some(s => textWidth(s.label, 13) > plotW / 2 - 40) ? 1 : 2;
    const rows = Math.ceil(legend.length / columns);
    const legendTop = top + plotH + 56;
    const H = legendTop + rows * 20 + 8;

    const box = html('div', {'class': 'panel chart-panel', 'data-panel': spec.id}, parent);
    const root = svg('svg', {
      'class': 'chart', 'width': W, 'height': H, 'viewBox': '0 0 ' + W + ' ' + H,
      'role': 'img', 'aria-label': spec.title,
    }, box);
    svg('rect', {'x': 0, 'y': 0, 'width': W, 'height': H, 'fill': '#ffffff'}, root);
    svg('text', {'class': 'title', 'x': left, 'y': 24, 'font-size': 17, 'font-weight': 'bold'},
        root, spec.title);
    const clipId = 'clip-' + spec.id;
    const clip = svg('clipPath', {'id': clipId}, svg('defs', {}, root));
    svg('rect', {'x': left, 'y': top, 'width': plotW, 'height': plotH}, clip);

    const grid = svg('g', {'class': 'grid', 'stroke': '#e3e3e3', 'stroke-width': 1}, root);
    const labels = svg('g', {'font-size': 13, 'fill': '#222'}, root);
    for (const t of x.ticks) {
      svg('line', {'x1': px(t), 'x2': px(t), 'y1': top, 'y2': top + plotH}, grid);
      svg('text', {'class': 'x-tick', 'x': px(t), 'y': top + plotH + 18, 'text-anchor': 'middle'},
          labels, t.toFixed(x.decimals));
    }
    for (const t of y.ticks) {
      svg('line', {'x1': left, 'x2': left + plotW, 'y1': py(t), 'y2': py(t)}, grid);
      svg('text', {'class': 'y-tick', 'x': left - 8, 'y': py(t) + 4, 'text-anchor': 'end'},
          labels, t.toFixed(y.decimals));
    }
    svg('rect', {'x': left, 'y': top, 'width': plotW, 'height': plotH, 'fill': 'none',
                 'stroke': '#888'}, root);
    if (y.lo < 0 && y.hi > 0) {
      svg('line', {'class': 'zero-line', 'x1': left, 'x2': left + plotW, 'y1': py(0), 'y2': py(0),
                   'stroke': '#444', 'stroke-width': 1.2}, root);
    }
    svg('text', {'class': 'x-label', 'x': left + plotW / 2, 'y': top + plotH + 40,
                 'text-anchor': 'middle', 'font-size': 14}, root, spec.xLabel);
    svg('text', {'class': 'y-label', 'x': 0, 'y': 0, 'font-size': 14, 'text-anchor': 'middle',
                 'transform': 'translate(18,' + (top + plotH / 2) + ') rotate(-90)'},
        root, spec.yLabel);

    const body = svg('g', {'clip-path': 'url(#' + clipId + ')'}, root);
    const posEnd = {}, negEnd = {};
    spec.series.forEach((s, index) => {
      const color = s.color || PALETTE[index % PALETTE.length];
      if (s.kind === 'bar') {
        for (const p of s.points) {
          if (!finite(p[0]) || !finite(p[1])) continue;
          const key = String(p[0]);
          const ends = p[1] >= 0 ? posEnd : negEnd;
          const from = ends[key] || 0, to = from + p[1];
          ends[key] = to;
          svg('rect', {
            'class': 'bar', 'data-series': s.label, 'data-x': p[0], 'data-value': p[1],
            'x': px(p[0] - barWidth / 2), 'width': px(p[0] + barWidth / 2) - px(p[0] - barWidth / 2),
            'y': Math.min(py(from), py(to)), 'height': Math.abs(py(from) - py(to)),
            'fill': color, 'opacity': 0.9,
          }, body);
          if (finite(p[2]) && p[2] > 0) {
            const cx = px(p[0]) + (s.errOffset || 0) * (px(barWidth) - px(0));
            const a = py(to - p[2]), b = py(to + p[2]);
            const g = svg('g', {'class': 'error-bar', 'data-series': s.label, 'data-x': p[0],
                                'data-se': p[2], 'stroke': '#111', 'stroke-width': 1.4}, body);
            svg('line', {'x1': cx, 'x2': cx, 'y1': a, 'y2': b}, g);
            svg('line', {'x1': cx - 4, 'x2': cx + 4, 'y1': a, 'y2': a}, g);
            svg('line', {'x1': cx - 4, 'x2': cx + 4, 'y1': b, 'y2': b}, g);
          }
        }
        return;
      }
      const target = s.noRange ? body : root;
      let run = [];
      let count = 0;
      const flush = () => {
        if (run.length) {
          svg('polyline', {
            'class': 'line', 'data-series': s.label, 'data-points': run.length,
            'points': run.join(' '), 'fill': 'none', 'stroke': color,
            'stroke-width': s.width || 2, 'stroke-opacity': s.opacity || 1,
            'stroke-dasharray': s.dashed ? '6 4' : 'none', 'stroke-linejoin': 'round',
          }, target);
        }
        run = [];
      };
      for (const p of s.points) {
        if (!finite(p[0]) || !finite(p[1])) {
          flush();
          continue;
        }
        run.push(px(p[0]).toFixed(1) + ',' + py(p[1]).toFixed(1));
        ++count;
        if (s.markers) {
          svg('circle', {'class': 'marker', 'data-series': s.label, 'cx': px(p[0]),
                         'cy': py(p[1]), 'r': 3.5, 'fill': color}, target);
        }
      }
      flush();
    });
    if (!hasData) {
      svg('text', {'class': 'note', 'x': left + plotW / 2, 'y': top + plotH / 2,
                   'text-anchor': 'middle', 'font-size': 15, 'fill': '#666'},
          root, spec.note || 'no data yet');
    }
    const colW = plotW / columns;
    legend.forEach((s, i) => {
      const lx = left + (i % columns) * colW, ly = legendTop + Math.floor(i / columns) * 20;
      const color = s.color || PALETTE[spec.series.indexOf(s) % PALETTE.length];
      if (s.kind === 'bar') {
        svg('rect', {'x': lx, 'y': ly - 10, 'width': 22, 'height': 12, 'fill': color}, root);
      } else {
        svg('line', {'x1': lx, 'x2': lx + 22, 'y1': ly - 4, 'y2': ly - 4, 'stroke': color,
                     'stroke-width': 3, 'stroke-dasharray': s.dashed ? '6 4' : 'none'}, root);
      }
      svg('text', {'class': 'legend-label', 'x': lx + 30, 'y': ly, 'font-size': 13}, root,
          s.label);
    });
    return box;
  }

  function section(parent, id, title) {
    const box = html('div', {'class': 'panel', 'data-panel': id}, parent);
    html('h2', {}, box, title);
    return box;
  }

  function table(parent, cls, header, rows) {
    const t = html('table', {'class': cls}, parent);
    const tr = html('tr', {}, html('thead', {}, t));
    for (const h of header) html('th', {}, tr, h);
    const tb = html('tbody', {}, t);
    for (const r of rows) {
      const row = html('tr', {}, tb);
      for (const c of r) html('td', {}, row, c);
    }
    return t;
  }

  // The gap terms an epoch carries: every gap_<term> key with a number (or null), in the
  // order history.json writes them; gap_<term>_se is its standard error.
  // gap_regularization is the sum of gap_dropout and gap_batchnorm: drawn only where a
  // history has no parts. Terms the model cannot have (absent_terms) are left out.
  function gapTerms(epochs, absent) {
    const terms = [];
    for (const e of epochs) {
      for (const k of Object.keys(e)) {
        const m = /^gap_([a-z0-9_]+)$/.exec(k);
        if (!m || /_se$/.test(m[1]) || terms.includes(m[1])) continue;
        terms.push(m[1]);
      }
    }
    const parts = terms.includes('dropout') && terms.includes('batchnorm');
    return terms.filter(t => !(parts && t === 'regularization') && !(absent || []).includes(t));
  }

  // Exact running mean of the epoch so far after each batch: samples are proportional to
  // the steps of epoch_progress, so weighting by them reproduces the per-sample mean.
  function runningMean(batches) {
    const out = [];
    let epoch = 0, sum = 0, weight = 0, prev = 0;
    for (const b of batches) {
      const e = Math.max(1, Math.ceil(b.epoch_progress - 1e-9));
      if (e !== epoch) {
        epoch = e;
        sum = 0;
        weight = 0;
        prev = e - 1;
      }
      const w = Math.max(b.epoch_progress - prev, 0);
      prev = b.epoch_progress;
      sum += w * b.loss;
      weight += w;
      out.push([b.epoch_progress, weight > 0 ? sum / weight : b.loss]);
    }
    return out;
  }

  // At most MAX_LINE_POINTS points: means over consecutive groups.
  function thin(points) {
    if (points.length <= MAX_LINE_POINTS) return {points: points, group: 1};
    const group = Math.ceil(points.length / MAX_LINE_POINTS);
    const out = [];
    for (let i = 0; i < points.length; i += group) {
      let sx = 0, sy = 0, n = 0;
      for (let j = i; j < Math.min(i + group, points.length); ++j) {
        sx += points[j][0];
        sy += points[j][1];
        ++n;
      }
      out.push([sx / n, sy / n]);
    }
    return {points: out, group: group};
  }

  function findingsOf(doc) {
    if (doc.findings && doc.findings.length) return doc.findings;
    const byName = {};
    const order = [];
    for (const e of doc.epochs) {
      for (const text of e.findings || []) {
        const colon = text.indexOf(':');
        const name = colon > 0 ? text.slice(0, colon) : text;
        if (!byName[name]) {
          byName[name] = {name: name, first_epoch: e.epoch, last_epoch: e.epoch};
          order.push(name);
        }
        byName[name].last_epoch = e.epoch;
        byName[name].explanation = colon > 0 ? text.slice(colon + 1).trim() : '';
      }
    }
    return order.map(n => byName[n]);
  }

  function drawImage(parent, image, meta, cls, title) {
    const c = html('canvas', {'class': cls, 'width': meta.width, 'height': meta.height,
                              'title': title}, parent);
    const bytes = atob(image);
    const ctx = c.getContext('2d');
    const data = ctx.createImageData(meta.width, meta.height);
    const plane = meta.width * meta.height;
    for (let i = 0; i < plane; ++i) {
      for (let ch = 0; ch < 3; ++ch) {
        const src = meta.channels >= 3 ? ch * plane + i : i;
        data.data[4 * i + ch] = bytes.charCodeAt(src);
      }
      data.data[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    c.style.width = meta.width * 3 + 'px';
    c.style.height = meta.height * 3 + 'px';
    return c;
  }

  function render(doc, root, mode) {
    const epochs = doc.epochs || [];
    const batches = doc.batches || [];
    const last = epochs.length ? epochs[epochs.length - 1] : null;
    const planned = doc.epochs_planned || 0;
    const xMax = Math.max(planned ? Math.min(planned, Math.ceil(
        Math.max(last ? last.epoch : 0, batches.length ? batches[batches.length - 1].epoch_progress
                                                         : 0))) : 0,
                          last ? last.epoch : 0, 1);
    root.textContent = '';

    // The run's state.
    const state = section(root, 'state', mode === 'live' ? 'Run (live)' : 'Run report');
    const p = doc.progress || {};
    const facts = [
      ['run', doc.run || '-'], ['config', doc.config_name || '-'],
      ['state', doc.state || '-'], ['ranks', String(doc.world_size || 1)],
      ['epoch', (p.epoch || (last ? last.epoch : 0)) + ' of ' + (planned || '-')],
      ['epoch progress', finite(p.epoch_progress) ? p.epoch_progress.toFixed(3) : '-'],
      ['global step', finite(p.global_step) ? String(p.global_step) : '-'],
      ['running loss', fixed(p.running_loss, 4)],
      ['learning rate', finite(p.lr) ? p.lr.toPrecision(4) : (last ? last.lr.toPrecision(4) : '-')],
      ['last validation', last ? 'loss ' + fixed(last.val_loss, 4) + ', accuracy ' +
                                     fixed(last.val_accuracy, 4) : '-'],
    ];
    // A stopped run's unfinished epoch: training figures only, never diagnosed.
    const partial = doc.partial_epoch;
    if (partial && finite(partial.epoch_fraction)) {
      facts.push(['partial epoch', 'epoch ' + partial.epoch + ' stopped at ' +
                  (100 * partial.epoch_fraction).toFixed(1) + '% (training loss ' +
                  fixed(partial.loss, 4) + '); not validated, not diagnosed']);
    }
    const dl = html('dl', {'class': 'facts'}, state);
    for (const [k, v] of facts) {
      html('dt', {}, dl, k);
      html('dd', {'data-fact': k.replace(/ /g, '_')}, dl, v);
    }
    html('p', {'class': 'updated'}, state,
         (mode === 'live' ? 'updated ' : 'written ') + (doc.generated_at || ''));

    // Per-batch loss and the exact running mean.
    const raw = thin(batches.map(b => [b.epoch_progress, b.loss]));
    const mean = thin(runningMean(batches));
    chart(root, {
      id: 'batch-loss', title: 'Training loss per batch and the exact running mean',
      xLabel: 'epoch', yLabel: 'loss', integerX: true, xInclude: [0, xMax],
      series: [
        {label: raw.group > 1 ? 'loss per batch (mean of ' + raw.group + ' batches)'
                              : 'loss per batch',
         color: SKY, points: raw.points, width: 1, opacity: 0.8},
        {label: 'running mean of the epoch (exact, per sample)', color: BLUE,
         points: mean.points, width: 2.2},
      ],
      note: 'no batch yet',
    });

    // The article's two panels.
    const train = epochs.map(e => [e.epoch, e.loss]);
    const val = epochs.map(e => [e.epoch, e.val_loss]);
    const yInclude = epochs.flatMap(e => [e.loss, e.val_loss, e.aligned_train_loss])
                         .filter(v => finite(v));
    chart(root, {
      id: 'loss-unshifted', title: 'Training and validation loss',
      xLabel: 'epoch', yLabel: 'loss', integerX: true, xInclude: [0, xMax], yInclude: yInclude,
      series: [
        {label: 'training loss (mean during the epoch)', color: BLUE, points: train,
         markers: true},
        {label: 'validation loss (after the epoch)', color: VERMILLION, points: val,
         markers: true},
      ],
      note: 'no epoch finished yet',
    });
    chart(root, {
      id: 'loss-shifted', title: 'Training loss shifted left by half an epoch',
      xLabel: 'epoch', yLabel: 'loss', integerX: true, xInclude: [0, xMax], yInclude: yInclude,
      series: [
        {label: 'training loss at epoch - 0.5', color: BLUE,
         points: epochs.map(e => [e.epoch - 0.5, e.loss]), markers: true},
        {label: 'validation loss (after the epoch)', color: VERMILLION, points: val,
         markers: true},
        {label: 'aligned training loss (half an epoch each side)', color: GREEN, dashed: true,
         markers: true,
         points: epochs.filter(e => finite(e.aligned_train_loss))
                     .map(e => [e.epoch, e.aligned_train_loss])},
      ],
      note: 'no epoch finished yet',
    });

    // The gap terms, stacked, with standard errors where the history has them.
    const terms = gapTerms(epochs, doc.absent_terms);
    const gapSeries = terms.map((t, i) => ({
      kind: 'bar', label: TERM_LABELS[t] || t, color: TERM_COLORS[t] || PALETTE[i % 8],
      errOffset: terms.length > 1 ? (i / (terms.length - 1) - 0.5) * 0.6 : 0,
      points: epochs.filter(e => terms.every(u => finite(e['gap_' + u])))
                  .map(e => [e.epoch, e['gap_' + t], e['gap_' + t + '_se']]),
    }));
    gapSeries.push({
      label: 'total: validation loss - training loss', color: BLACK, markers: true,
      points: epochs.filter(e => terms.length && terms.every(u => finite(e['gap_' + u])))
                  .map(e => [e.epoch, e.val_loss - e.loss]),
    });
    const gapBox = chart(root, {
      id: 'gap-terms', title: 'Why validation loss differs from training loss',
      xLabel: 'epoch', yLabel: 'validation loss - training loss', integerX: true,
      xInclude: [0, xMax], yInclude: [0], series: gapSeries,
      note: 'no epoch with the gap terms yet (probes off?)',
    });
    const hasSe = terms.some(t => epochs.some(e => finite(e['gap_' + t + '_se'])));
    html('p', {'class': 'caption'}, gapBox,
         !terms.length ? 'The gap terms appear after the first epoch (with probes on).'
                       : 'Terms: ' + terms.join(', ') + '. ' +
                             (hasSe ? 'Error bars: one standard error of each term.'
                                    : 'This history carries no standard errors, so no error ' +
                                          'bars are drawn.'));

    // Findings.
    const fbox = section(root, 'findings', 'Findings');
    const findings = findingsOf(doc);
    if (!findings.length) {
      html('p', {'class': 'finding-none'}, fbox,
           epochs.length ? 'No finding crossed its threshold.' : 'No epoch finished yet.');
    }
    const ul = html('ul', {'class': 'findings'}, fbox);
    for (const f of findings) {
      const li = html('li', {'class': 'finding', 'data-finding': f.name}, ul);
      html('strong', {}, li, f.name);
      html('span', {'class': 'epochs'}, li,
           ' (epoch' + (f.first_epoch === f.last_epoch ? ' ' + f.first_epoch
                                                       : 's ' + f.first_epoch + '-' + f.last_epoch) +
               '): ');
      html('span', {'class': 'finding-text'}, li, f.explanation || '');
    }
    if (last && last.dominant_term) {
      html('p', {'class': 'dominant'}, fbox, 'Dominant term at epoch ' + last.epoch + ': ' +
                                                 last.dominant_term + '.');
    }

    // Leakage.
    const lbox = section(root, 'leakage', 'Leakage scan');
    const leak = doc.leakage;
    if (!leak) {
      html('p', {'class': 'leak-none'}, lbox, 'No leakage scan for this run (--no-scan).');
    } else {
      table(lbox, 'leak-counts',
            ['exact', 'near', 'photometric', 'shifted', 'mirrored', 'label conflicts', 'pairs',
             'validation scanned', 'near threshold (RMSE)'],
            [[String(leak.exact), String(leak.near), String(leak.photometric || 0),
              String(leak.shifted || 0), String(leak.mirrored || 0), String(leak.label_conflicts),
              String(leak.pair_count), String(leak.val_samples), String(leak.near_rmse)]]);
      const pairs = leak.pairs || [];
      if (pairs.length) {
        html('p', {}, lbox, 'Flagged pairs (validation | training)' +
                                (leak.pair_count > pairs.length
                                     ? ', the first ' + pairs.length + ' of ' + leak.pair_count
                                     : '') + ':');
        const grid = html('div', {'class': 'leak-grid'}, lbox);
        for (const q of pairs) {
          const cell = html('figure', {'class': 'leak-pair' + (q.label_conflict ? ' conflict' : '')},
                            grid);
          if (q.val_image && q.train_image) {
            drawImage(cell, q.val_image, leak.image, 'leak-image', 'validation ' + q.val_index);
            drawImage(cell, q.train_image, leak.image, 'leak-image', 'training ' + q.train_index);
          }
          html('figcaption', {}, cell,
               'val ' + q.val_index + ' | train ' + q.train_index + (q.kind ? ', ' + q.kind : '') +
                   ', RMSE ' + q.rmse.toFixed(4) + (q.label_conflict ? ', labels differ' : ''));
        }
      } else if (leak.pair_count > 0) {
        html('p', {}, lbox, 'Pairs found, but the images are not available here.');
      } else {
        html('p', {'class': 'leak-clean'}, lbox, 'No validation sample duplicates a training sample.');
      }
    }

    // Throughput per rank.
    const ranks = doc.ranks || [];
    const tbox = chart(root, {
      id: 'throughput', title: 'Training throughput per rank', xLabel: 'rank',
      yLabel: 'images/s', integerX: true, yInclude: [0],
      xInclude: ranks.length ? [-0.5, ranks.length - 0.5] : [0, 1],
      series: [{kind: 'bar', label: 'images/s of each rank', color: BLUE,
                points: ranks.map(r => [r.rank, r.images_per_second])}],
      note: 'no timings gathered yet',
    });
    if (ranks.length) {
      table(tbox, 'rank-table', ['rank', 'images/s', 'step ms', 'data ms', 'exposed all-reduce ms'],
            ranks.map(r => [String(r.rank), fixed(r.images_per_second, 1), fixed(r.step_ms, 2),
                            fixed(r.data_ms, 2), fixed(r.allreduce_wait_ms, 2)]));
    }
    if (last) {
      html('p', {'class': 'caption'}, tbox,
           'All ranks, last epoch: ' + fixed(last.images_per_second, 1) + ' images/s.');
    }

    if (mode !== 'report') return;

    // The report's tables.
    const ebox = section(root, 'epoch-table', 'Epochs');
    table(ebox, 'epochs',
          ['epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'P_train', 'P_eval', 'aligned',
           'seconds', 'images/s', 'lr'],
          epochs.map(e => [String(e.epoch), fixed(e.loss, 4), fixed(e.accuracy, 4),
                           fixed(e.val_loss, 4), fixed(e.val_accuracy, 4),
                           fixed(e.probe_train_loss, 4), fixed(e.probe_eval_loss, 4),
                           fixed(e.aligned_train_loss, 4), fixed(e.seconds, 1),
                           fixed(e.images_per_second, 0), finite(e.lr) ? e.lr.toPrecision(4) : '-']));
    const dbox = section(root, 'decomposition-table', 'Decomposition: val_loss - loss = ' +
                                                          (terms.length ? terms.join(' + ') : 'terms'));
    table(dbox, 'decomposition',
          ['epoch', 'val_loss - loss'].concat(terms).concat(['sum of terms', 'dominant']),
          epochs.map(e => [String(e.epoch), signed(e.val_loss - e.loss, 4)]
                              .concat(terms.map(t => signed(e['gap_' + t], 4) +
                                                     (finite(e['gap_' + t + '_se'])
                                                          ? ' \u00b1 ' + fixed(e['gap_' + t + '_se'], 4)
                                                          : '')))
                              .concat([signed(terms.reduce((a, t) => a + e['gap_' + t], 0), 4),
                                       e.dominant_term || '-'])));
    const cbox = section(root, 'classification-report', 'Classification report (validation)');
    html('pre', {'class': 'classification'}, cbox,
         doc.classification_report || 'not available (the run has no report.txt)');
    const gbox = section(root, 'config', 'Config');
    html('pre', {'class': 'config'}, gbox,
         doc.config_text || JSON.stringify(doc.config || {}, null, 2));
  }

  window.EpochalRunView = {render: render, gapTerms: gapTerms, runningMean: runningMean};
})();
