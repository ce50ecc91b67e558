// The page's whole logic: describe the model, send an upload or the canvas, show the answer.
// Plain DOM and fetch: no library, nothing from the network but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const pen = canvas.getContext("2d");

// The model's input (height, width) and how images are shaped for it (/healthz); a "crop" model
// reads the top-left input_shape of an image as it is, so the drawing is scaled to exactly that.
let inputShape = null;
let resize = "";
let penWidth = 6;

function clearCanvas() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
  pen.strokeStyle = "#000";
  pen.lineWidth = penWidth;
  pen.lineCap = "round";
  pen.lineJoin = "round";
}

// The drawing as the model should see it: scaled to the input shape for a "crop" model (the
// canvas has its aspect), else as drawn (the other modes scale by height or keep the aspect).
function drawingBlob(done) {
  if (resize !== "crop" || !inputShape) {
    canvas.toBlob(done, "image/png");
    return;
  }
  const scaled = document.createElement("canvas");
  [scaled.height, scaled.width] = inputShape;
  scaled.getContext("2d").drawImage(canvas, 0, 0, scaled.width, scaled.height);
  scaled.toBlob(done, "image/png");
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
    const json = (reply.headers.get("content-type") || "").includes("application/json");
    const body = json ? await reply.json() : { error: await reply.text() };
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
  $("file").value = "";  // the same file picked again is read again
});

$("read").addEventListener("click", () => {
  drawingBlob((blob) => send(blob, "drawing.png"));
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
  if (event.button !== 0) return;  // the main button (or a touch, or a pen) draws
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
    inputShape = health.input_shape;
    resize = health.resize;
    let resized = true;
    if (health.kind === "character") {  // a square canvas for one character
      canvas.width = 280;
      canvas.height = 280;
      penWidth = 22;  // 2-3 pixels at 28 x 28, as MNIST's strokes
      $("mode").disabled = true;
    } else if (resize === "crop" && inputShape) {  // the input's aspect, 600 wide
      canvas.width = 600;
      canvas.height = Math.max(1, Math.round((600 * inputShape[0]) / inputShape[1]));
      penWidth = Math.max(3, Math.round(canvas.height / 12));
    } else {
      resized = false;
    }
    if (resized) clearCanvas();  // a resized canvas is blank; otherwise what was drawn stays
  } catch (e) {
    $("model").textContent = "the server did not describe its model: " + e;
  }
}

clearCanvas();
describe();
