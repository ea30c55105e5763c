// The leukoflow page: send dropped cell images to POST /v1/predict, show the rows, the
// Grad-CAM of a clicked cell (POST /v1/saliency) and offer the CSV `leukoflow predict` writes.
// URLs are relative, so the page works under a reverse proxy's prefix too.
"use strict";

const EXTENSIONS = [".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"];
const $ = (selector) => document.querySelector(selector);
let limits = { max_images: 64, max_request_bytes: 64 * 1024 * 1024 };
let csvText = "";

function headers() {
  const token = $("#token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

function say(text, error = false) {
  $("#status").textContent = text;
  $("#status").className = error ? "error" : "";
}

async function answer(response) {
  const body = await response.json().catch(() => ({}));
  if (response.ok) return body;
  const detail = body.detail;
  const text = typeof detail === "string" ? detail : (detail && detail.message) || response.statusText;
  throw new Error(response.status + ": " + text);
}

async function loadModels() {
  try {
    const body = await answer(await fetch("v1/models", { headers: headers() }));
    limits = body.limits;
    const select = $("#model");
    select.replaceChildren(...body.models.map((m) => new Option(`${m.name} (${m.kind}, ${m.engine})`, m.name)));
    say(`${body.models.length} model(s) served. Drop images to classify them.`);
  } catch (error) {
    say("Cannot list the models: " + error.message + " (a token?)", true);
  }
}

function isImage(name) {
  const lower = name.toLowerCase();
  return EXTENSIONS.some((ext) => lower.endsWith(ext));
}

// Every file under a dropped entry, with its path relative to the drop.
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    out.push({ name: prefix + entry.name, file });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child, prefix + entry.name + "/", out);
    }
  }
}

// Requests of at most limits.max_images images and 90% of the byte limit each.
function chunks(items) {
  const out = [];
  let current = [], bytes = 0;
  for (const item of items) {
    const size = item.file.size + 1024;
    if (current.length && (current.length >= limits.max_images || bytes + size > 0.9 * limits.max_request_bytes)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function addRow(item, row) {
  const tr = document.createElement("tr");
  const thumb = document.createElement("td");
  const img = document.createElement("img");
  img.src = URL.createObjectURL(item.file);
  img.alt = "";
  thumb.append(img);
  const p = row.calibrated_probability_all;
  tr.append(thumb, cell(row.path), cell(row.label || "", row.label),
    cell(p === null ? "" : p.toFixed(4)), cell(String(row.threshold)),
    cell(row.refer === null ? "" : (row.refer ? "yes" : "no")), cell(row.error || ""));
  if (row.refer) tr.classList.add("referred");
  if (row.error) tr.classList.add("failed");
  else tr.addEventListener("click", () => saliency(tr, item));
  $("#results tbody").append(tr);
}

function showPatients(groups) {
  const keys = ["group", "cells", "cells_with_errors", "referred", "cells_used", "aggregate",
    "call", "cells_needed", "below_needed"];
  for (const group of groups) {
    const tr = document.createElement("tr");
    tr.append(...keys.map((key) => {
      const value = group[key];
      return cell(key === "aggregate" && value !== "" ? value.toFixed(4) : String(value), key === "call" ? value : "");
    }));
    $("#patient-table tbody").append(tr);
  }
  $("#patient-table").hidden = false;
}

async function classify(items) {
  items = items.filter((item) => isImage(item.name));
  items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  $("#results tbody").replaceChildren();
  $("#patient-table tbody").replaceChildren();
  $("#patient-table").hidden = true;
  $("#saliency").hidden = true;
  $("#download").disabled = true;
  csvText = "";
  if (!items.length) return say("No image files (BMP, PNG, JPEG, TIFF) among those given.", true);
  let done = 0, referred = 0, failed = 0;
  const lines = [], grouping = $("#patients").value, parts = chunks(items);
  if (grouping && parts.length > 1) {
    return say(`A patient summary needs all cells in one request: at most ${limits.max_images} images.`, true);
  }
  try {
    for (const part of parts) {
      const form = new FormData();
      form.append("model", $("#model").value);
      for (const item of part) form.append("images", item.file, item.name);
      say(`Classifying ${done + 1}-${done + part.length} of ${items.length} ...`);
      const query = "v1/predict?csv=true" + (grouping ? "&patients=" + grouping : "");
      const response = await fetch(query, { method: "POST", body: form, headers: headers() });
      const body = await answer(response);
      if (body.patients) showPatients(body.patients);
      body.images.forEach((row, i) => {
        addRow(part[i], row);
        referred += row.refer ? 1 : 0;
        failed += row.error ? 1 : 0;
      });
      const rows = body.csv.split("\r\n").filter((line) => line);
      lines.push(...(lines.length ? rows.slice(1) : rows));
      done += part.length;
    }
    csvText = lines.join("\r\n") + "\r\n";
    $("#download").disabled = false;
    const all = $("#results").querySelectorAll("td.all").length;
    say(`${done} images: ${all} all, ${done - all - failed} hem, ${referred} referred, ${failed} not usable.`);
  } catch (error) {
    say("Refused: " + error.message, true);
  }
}

async function saliency(tr, item) {
  document.querySelectorAll("tr.chosen").forEach((row) => row.classList.remove("chosen"));
  tr.classList.add("chosen");
  const form = new FormData();
  form.append("model", $("#model").value);
  form.append("image", item.file, item.name);
  const panel = $("#saliency");
  panel.querySelector("p").textContent = "Computing the Grad-CAM of " + item.name + " ...";
  panel.hidden = false;
  try {
    const response = await fetch("v1/saliency", { method: "POST", body: form, headers: headers() });
    if (!response.ok) await answer(response);
    const img = panel.querySelector("img");
    img.src = URL.createObjectURL(await response.blob());
    panel.querySelector("p").textContent = item.name + ": red marks what drove its label.";
  } catch (error) {
    panel.querySelector("p").textContent = "No saliency: " + error.message;
  }
}

$("#files").addEventListener("change", (event) =>
  classify([...event.target.files].map((file) => ({ name: file.name, file }))));
$("#folder").addEventListener("change", (event) =>
  classify([...event.target.files].map((file) => ({ name: file.webkitRelativePath || file.name, file }))));
$("#token").addEventListener("change", loadModels);
$("#download").addEventListener("click", () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([csvText], { type: "text/csv" }));
  link.download = "predictions.csv";
  link.click();
});
const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const entries = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry()).filter(Boolean);
  const items = [];
  for (const entry of entries) await walk(entry, "", items);
  classify(items);
});
loadModels();
