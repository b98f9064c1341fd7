/* respmatch report: the page's glue.  Unpacks the embedded libraries (plotly.js, 3Dmol.js), draws
   the plots, runs the structure table (sort, filter, pages) and shows a chosen structure in the
   3D viewer with its CIF/XYZ download.  Nothing is fetched from anywhere. */
"use strict";

const data = JSON.parse(document.getElementById("report-data").textContent);
const table = data.table;
const rowCount = table.index.length;
const status = document.getElementById("status");

async function unpackLibraries() {
  // gzip + base64 in the page, unpacked by the browser's own DecompressionStream.
  for (const element of document.querySelectorAll("script.packed-library")) {
    const binary = atob(element.textContent.trim());
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const script = document.createElement("script");
    script.textContent = await new Response(stream).text();
    document.head.appendChild(script);
    element.remove();
  }
}

/* ---- plots ---- */

function drawFigures(onPick) {
  const drawn = [];
  for (const div of document.querySelectorAll("[data-figure]")) {
    const figure = data.figures[div.dataset.figure];
    if (!figure) continue;
    drawn.push(
      Plotly.newPlot(div, figure.data, figure.layout, { responsive: true, displaylogo: false }).then(() => {
        div.on("plotly_click", (event) => {
          const point = event.points[0];
          if (point && typeof point.customdata === "number") onPick(point.customdata);
        });
      })
    );
  }
  return Promise.all(drawn);
}

/* ---- structure table ---- */

const columns = [...document.querySelectorAll("#structure-table th[data-key]")].map((th) => th.dataset.key);
const state = { key: "energy", direction: 1, page: 0, order: [], selected: -1 };
const fixed = (digits) => (value) => (value === null ? "" : value.toFixed(digits));
const display = {
  run: (value) => table.runs[value],
  composition: (value) => table.compositions[value],
  energy: fixed(4),
  volume: fixed(3),
  physical: fixed(4),
  converged: (value) => (value === null ? "" : value ? "yes" : "no"),
};
let searchText = null;

function searchable(i) {
  if (searchText === null) {
    searchText = table.index.map((_, k) =>
      [table.compositions[table.composition[k]], table.verdict[k], table.label[k], table.match[k]].join(" ").toLowerCase()
    );
  }
  return searchText[i];
}

function compare(key) {
  const values = table[key];
  const strings = typeof values.find((v) => v !== null) === "string";
  return (a, b) => {
    const x = values[a], y = values[b];
    if (x === null || x === "" || y === null || y === "") {
      return (x === null || x === "") - (y === null || y === "") || a - b; // empty cells last
    }
    const order = strings ? x.localeCompare(y) : x - y;
    return order * state.direction || a - b;
  };
}

function applyFilters() {
  const text = document.getElementById("filter-text").value.trim().toLowerCase();
  const composition = document.getElementById("filter-composition").value;
  const verdict = document.getElementById("filter-verdict").value;
  const converged = document.getElementById("filter-converged").checked;
  const embedded = document.getElementById("filter-embedded").checked;
  const order = [];
  for (let i = 0; i < rowCount; i++) {
    if (composition !== "" && table.composition[i] !== Number(composition)) continue;
    if (verdict !== "" && table.verdict[i] !== verdict) continue;
    if (converged && table.converged[i] !== true) continue;
    if (embedded && table.file[i] < 0) continue;
    if (text && !searchable(i).includes(text)) continue;
    order.push(i);
  }
  state.order = order.sort(compare(state.key));
  state.page = 0;
  drawTable();
}

function drawTable() {
  const pages = Math.max(1, Math.ceil(state.order.length / data.pageSize));
  state.page = Math.min(state.page, pages - 1);
  const shown = state.order.slice(state.page * data.pageSize, (state.page + 1) * data.pageSize);
  const body = document.querySelector("#structure-table tbody");
  const rows = document.createDocumentFragment();
  for (const i of shown) {
    const tr = document.createElement("tr");
    tr.dataset.row = i;
    if (table.file[i] < 0) tr.className = "bare";
    if (i === state.selected) tr.classList.add("selected");
    for (const key of columns) {
      const td = document.createElement("td");
      const value = table[key][i];
      td.textContent = key in display ? display[key](value) : value ?? "";
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  document.getElementById("count").textContent = `${state.order.length} of ${rowCount} structures`;
  document.getElementById("page").textContent = ` page ${state.page + 1} of ${pages} `;
  for (const th of document.querySelectorAll("#structure-table th[data-key]")) {
    th.classList.toggle("sorted", th.dataset.key === state.key);
    th.dataset.direction = th.dataset.key === state.key ? (state.direction > 0 ? "ascending" : "descending") : "";
  }
}

function setUpTable(onSelect) {
  const compositionSelect = document.getElementById("filter-composition");
  table.compositions.forEach((name, code) => compositionSelect.add(new Option(name, code)));
  const verdictSelect = document.getElementById("filter-verdict");
  [...new Set(table.verdict)].sort().forEach((name) => verdictSelect.add(new Option(name, name)));
  for (const id of ["filter-text", "filter-composition", "filter-verdict", "filter-converged", "filter-embedded"]) {
    document.getElementById(id).addEventListener("input", applyFilters);
  }
  for (const th of document.querySelectorAll("#structure-table th[data-key]")) {
    th.addEventListener("click", () => {
      state.direction = state.key === th.dataset.key ? -state.direction : 1;
      state.key = th.dataset.key;
      state.order.sort(compare(state.key));
      drawTable();
    });
  }
  document.getElementById("page-previous").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); drawTable(); });
  document.getElementById("page-next").addEventListener("click", () => { state.page += 1; drawTable(); });
  document.querySelector("#structure-table tbody").addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr) onSelect(Number(tr.dataset.row));
  });
  applyFilters();
}

/* ---- 3D viewer and download ---- */

function makeViewer() {
  const viewer = $3Dmol.createViewer(document.getElementById("viewer"), { backgroundColor: "white" });
  const caption = document.getElementById("viewer-caption");
  const link = document.getElementById("download");
  const supercell = document.getElementById("supercell");
  let url = null;

  function show(i) {
    viewer.clear();
    if (url) URL.revokeObjectURL(url);
    url = null;
    const name = `${table.compositions[table.composition[i]]}, structure ${table.index[i]}` +
      (table.runs.length > 1 ? ` of ${table.runs[table.run[i]]}` : "");
    if (table.file[i] < 0) {
      caption.textContent = `${name}: coordinates not in this page (it holds the lowest-Ẽ structures of each composition; see --structures).`;
      link.classList.add("hidden");
      viewer.render();
      return;
    }
    const file = data.files[table.file[i]];
    const model = viewer.addModel(file.text, file.format);
    model.setStyle({}, { stick: { radius: 0.12, colorscheme: "Jmol" }, sphere: { scale: 0.28, colorscheme: "Jmol" } });
    if (file.format === "cif") {
      viewer.addUnitCell(model);
      if (supercell.checked) viewer.replicateUnitCell(2, 2, 2, model, true);
    }
    viewer.zoomTo();
    viewer.render();
    const energy = table.energy[i] === null ? "" : `, Ẽ/atom ${table.energy[i].toFixed(4)} eV`;
    caption.textContent = `${name}${energy}. Drag to rotate, scroll to zoom.`;
    url = URL.createObjectURL(new Blob([file.text], { type: file.format === "cif" ? "chemical/x-cif" : "chemical/x-xyz" }));
    link.href = url;
    link.download = file.name;
    link.textContent = `download ${file.name}`;
    link.classList.remove("hidden");
  }
  supercell.addEventListener("input", () => { if (state.selected >= 0) show(state.selected); });
  return show;
}

async function main() {
  await unpackLibraries();
  performance.mark("libraries");
  const show = makeViewer();
  const select = (i) => {
    state.selected = i;
    for (const tr of document.querySelectorAll("#structure-table tr.selected")) tr.classList.remove("selected");
    const tr = document.querySelector(`#structure-table tr[data-row="${i}"]`);
    if (tr) tr.classList.add("selected");
    show(i);
  };
  setUpTable(select);
  performance.mark("table");
  await drawFigures(select);
  performance.mark("plots");
  status.textContent = "";
  document.documentElement.dataset.readyMs = performance.now().toFixed(0); // since navigation began
  document.documentElement.dataset.ready = "true";
}

main().catch((error) => {
  status.textContent = `This page failed to load: ${error}`;
  status.className = "error";
  console.error(error);
});
