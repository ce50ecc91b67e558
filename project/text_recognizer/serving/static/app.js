// The page's whole logic: describe the model, send an upload or the canvas, show the answer.
// Plain DOM and fetch: no library, nothing from the network but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const pen = canvas.getContext("2d");

function clearCanvas() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
  pen.strokeStyle = "#000";
  pen.lineWidth = 6;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}

function show(answer) {
  $("pred").textContent = answer.pred;
  $("conf").textContent = answer.conf === null ? "-" : answer.conf.toFixed(4);
  $("ms").textContent = answer.ms.toFixed(1) + " ms";
  $("error").textContent = "";
}

function fail(message) {
  $("pred").textContent = "";
  $("conf").textContent = "";
  $("ms").textContent = "";
  $("error").textContent = message;
}

async function send(blob, name) {
  const form = new FormData();
  form.append("image", blob, name);
  const mode = $("mode").value === "paragraph" ? "?mode=paragraph" : "";
  $("status").textContent = "reading...";
  try {
    const reply = await fetch("/v1/predict" + mode, { method: "POST", body: form });
    const body = await reply.json();
    if (reply.ok) show(body);
    else fail(body.error || reply.statusText);
  } catch (e) {
    fail("no answer from the server: " + e);
  }
  $("status").textContent = "done";
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) send(file, file.name);
});

$("read").addEventListener("click", () => {
  canvas.toBlob((blob) => send(blob, "drawing.png"), "image/png");
});

$("clear").addEventListener("click", clearCanvas);

let drawing = false;
function at(event) {
  const box = canvas.getBoundingClientRect();
  return [
    (event.clientX - box.left) * (canvas.width / box.width),
    (event.clientY - box.top) * (canvas.height / box.height),
  ];
}
canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  pen.beginPath();
  pen.moveTo(...at(event));
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  pen.lineTo(...at(event));
  pen.stroke();
});
canvas.addEventListener("pointerup", () => { drawing = false; });
canvas.addEventListener("pointercancel", () => { drawing = false; });

async function describe() {
  try {
    const health = await (await fetch("/healthz")).json();
    $("model").textContent =
      `${health.kind} model, ${health.decoder} decoding, ${health.runtime} runtime, ` +
      `version ${health.version}`;
    if (health.kind === "character") {  // a square canvas for one character
      canvas.width = 200;
      canvas.height = 200;
      $("mode").disabled = true;
    }
  } catch (e) {
    $("model").textContent = "the server did not describe its model: " + e;
  }
  clearCanvas();
}

clearCanvas();
describe();
