// Photos in the JS client (protocol.md §14.1): what is uploaded, the preview, the multipart POST
// with its progress, and a photo going through the same idempotent outbox as text (one message
// id from the start; a failed upload retried under it; a resend reusing the upload_id).

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { fitPreview, fitted, planUpload, uploadForm } from "../lib/media.js";
import { FakeClock, FakeConnection } from "./fakes.mjs";

const MB = 1024 * 1024;

test("planUpload: large photos become a JPEG of at most 2048 px; small PNG/WebP and GIFs go as they are", () => {
  assert.deepEqual(planUpload({ type: "image/jpeg", size: 4 * MB, width: 4032, height: 3024 }),
    { keep: false, type: "image/jpeg", width: 2048, height: 1536 });
  assert.deepEqual(planUpload({ type: "image/jpeg", size: 50_000, width: 800, height: 600 }),
    { keep: false, type: "image/jpeg", width: 800, height: 600 }, "a JPEG is re-encoded: its metadata (location) goes");
  assert.deepEqual(planUpload({ type: "image/png", size: 300_000, width: 1200, height: 900 }),
    { keep: true, type: "image/png", width: 1200, height: 900 });
  assert.deepEqual(planUpload({ type: "image/webp", size: MB, width: 2048, height: 10 }),
    { keep: true, type: "image/webp", width: 2048, height: 10 }, "the limits themselves are small enough");
  assert.equal(planUpload({ type: "image/png", size: MB + 1, width: 500, height: 500 }).keep, false, "over 1 MB");
  assert.deepEqual(planUpload({ type: "image/png", size: 10_000, width: 1000, height: 3000 }),
    { keep: false, type: "image/jpeg", width: 683, height: 2048 }, "over 2048 px: scaled, aspect kept");
  assert.deepEqual(planUpload({ type: "image/gif", size: 9 * MB, width: 3000, height: 3000 }),
    { keep: true, type: "image/gif", width: 3000, height: 3000 }, "a GIF may be animated: never re-encoded");
  assert.equal(planUpload({ type: "image/gif", size: 11 * MB, width: 300, height: 300 }).keep, false);
  assert.deepEqual(fitted(10, 5000, 240), { width: 1, height: 240 }, "never 0 px");
  assert.deepEqual(fitted(100, 50, 240), { width: 100, height: 50 }, "never enlarged");
});

test("fitPreview: the first attempt within 4096 characters, lower quality then smaller first", async () => {
  const asked = [];
  const preview = await fitPreview(async (side, quality) => {
    asked.push([side, quality]);
    const length = side * side * quality * 4; // grows with both
    return `data:image/jpeg;base64,${"A".repeat(Math.round(length))}`;
  });
  assert.deepEqual(asked, [[64, 0.7], [64, 0.5], [64, 0.3], [48, 0.7], [48, 0.5], [48, 0.3]]);
  assert.ok(preview.length <= 4096);
  assert.equal(await fitPreview(async () => `data:image/jpeg;base64,${"A".repeat(5000)}`), null, "nothing fits: none");
  assert.equal(await fitPreview(async () => "data:text/html;base64,AAAA"), null, "only an image data URL");
});

class FakeFormData {
  entries = [];
  append(name, value) { this.entries.push([name, value]); }
}

function fakeXhr(script) {
  const made = [];
  class Xhr {
    upload = {};
    constructor() { made.push(this); }
    open(method, url) { Object.assign(this, { method, url }); }
    send(body) { this.body = body; setImmediate(() => script(this)); }
  }
  return { Xhr, made };
}

test("uploadForm: every field in order, then the file last; progress events; 204 resolves", async () => {
  const { Xhr, made } = fakeXhr((xhr) => {
    xhr.upload.onprogress({ lengthComputable: true, loaded: 50, total: 200 });
    xhr.upload.onprogress({ lengthComputable: true, loaded: 200, total: 200 });
    xhr.status = 204;
    xhr.onload();
  });
  const slot = { url: "http://s3.local/bucket", fields: { key: "u/a/b", "Content-Type": "image/png", policy: "p", "x-amz-signature": "s" } };
  const progress = [];
  await uploadForm(slot, "BYTES", { onProgress: (f) => progress.push(f), XHR: Xhr, FormDataImpl: FakeFormData });
  assert.equal(made[0].method, "POST");
  assert.equal(made[0].url, "http://s3.local/bucket");
  assert.deepEqual(made[0].body.entries.map(([name]) => name), ["key", "Content-Type", "policy", "x-amz-signature", "file"]);
  assert.equal(made[0].body.entries.at(-1)[1], "BYTES");
  assert.deepEqual(progress, [0.25, 1, 1]);
});

test("uploadForm: a refusal (403) and a network error reject with upload_failed", async () => {
  for (const [script, status] of [[(xhr) => { xhr.status = 403; xhr.onload(); }, 403], [(xhr) => xhr.onerror(), 0],
    [(xhr) => xhr.onabort(), 0]]) {
    const { Xhr } = fakeXhr(script);
    await assert.rejects(uploadForm({ url: "u", fields: {} }, "B", { XHR: Xhr, FormDataImpl: FakeFormData }),
      (error) => error.code === "upload_failed" && error.status === status);
  }
});

const PREPARED = { blob: "JPEG", contentType: "image/jpeg", size: 1234, width: 800, height: 600, preview: "data:image/jpeg;base64,AAAA" };

/** A ChatClient whose server gives upload slots, and whose S3 fails the uploads it is told to. */
function setup({ failUploads = 0 } = {}) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.timers = clock;
  let slots = 0;
  connection.answer = (frame) => {
    if (frame.action === "sync") return { type: "sync", messages: [], more: false };
    if (frame.action === "upload") {
      slots += 1;
      return { type: "upload", upload_id: `u/owner/slot${slots}`, url: "http://s3/b", fields: { key: `u/owner/slot${slots}` },
        max_bytes: 10 * MB, expires_at: 1 };
    }
    return undefined;
  };
  const uploads = [];
  let failures = failUploads;
  const media = {
    prepare: async (file) => ({ ...PREPARED, from: file }),
    upload: async (slot, blob, { onProgress }) => {
      uploads.push(slot.upload_id);
      onProgress(0.5);
      if (failures > 0) { failures -= 1; throw Object.assign(new Error("aborted"), { code: "upload_failed", status: 0 }); }
      onProgress(1);
    },
    objectUrl: () => "blob:local-1",
  };
  let n = 0;
  const client = new ChatClient({ connection, timers: clock, newId: () => `id-${(n += 1)}`, media, now: clock.now });
  const views = [];
  client.on("outgoing", (view) => views.push(view));
  client.start();
  return { clock, connection, client, views, uploads };
}

test("a photo: upload slot, POST, then one send with image, shown as our own message with the image", async () => {
  const { clock, connection, client, views, uploads } = setup();
  const messages = [];
  client.on("message", (m) => messages.push(m));
  const first = client.sendImage({ file: "photo.jpg", text: "the broken part", conversationId: "d_ab" });
  assert.equal(first.state, "uploading");
  await clock.advance(0);
  assert.deepEqual(connection.framesOf("upload").map(({ content_type: type, size }) => [type, size]), [["image/jpeg", 1234]]);
  assert.deepEqual(uploads, ["u/owner/slot1"]);
  assert.ok(views.some((v) => v.state === "uploading" && v.progress === 0.5 && v.image.local === "blob:local-1"), "progress shown");
  const [send] = connection.framesOf("send");
  assert.equal(send.id, first.id, "the message id chosen at the start");
  assert.equal(send.text, "the broken part");
  assert.deepEqual(send.image, { upload_id: "u/owner/slot1", content_type: "image/jpeg", size: 1234, width: 800, height: 600,
    preview: "data:image/jpeg;base64,AAAA" });
  connection.push({ type: "sent", ref: send.id, conversation_id: "d_ab", seq: 1, time: 5 });
  await clock.advance(50);
  assert.equal(views.at(-1).state, "sent");
  assert.equal(messages[0].image.upload_id, "u/owner/slot1", "our own message carries its image");
});

test("a failed upload shows failed; Retry uploads again under the same message id and sends once", async () => {
  const { clock, connection, client, views, uploads } = setup({ failUploads: 1 });
  const view = client.sendImage({ file: "photo.png", conversationId: "d_ab" });
  await clock.advance(0);
  assert.equal(views.at(-1).state, "failed");
  assert.equal(views.at(-1).error, "upload_failed");
  assert.ok(views.at(-1).image.preview, "the failed bubble still shows the picture");
  assert.equal(connection.framesOf("send").length, 0, "nothing sent for a failed upload");
  assert.deepEqual((await client.unsettled()).map((v) => [v.id, v.state]), [[view.id, "failed"]]);
  const again = client.resend(view.id);
  assert.equal(again.state, "uploading");
  assert.equal(client.resend(view.id), null, "a second Retry while it runs does nothing");
  await clock.advance(0);
  assert.deepEqual(uploads, ["u/owner/slot1", "u/owner/slot2"], "a new slot (the old one may have expired)");
  const sends = connection.framesOf("send");
  assert.equal(sends.length, 1);
  assert.equal(sends[0].id, view.id);
  assert.equal(sends[0].image.upload_id, "u/owner/slot2");
  assert.equal(sends[0].text, "", "no caption: text is empty");
});

test("a photo send without an answer is repeated with the same id and upload_id, and resend reuses both", async () => {
  const { clock, connection, client, views, uploads } = setup();
  const view = client.sendImage({ file: "p.jpg", to: { kind: "user", id: "bob" } });
  await clock.advance(3000 * 4 + 10); // four attempts, no `sent`
  assert.equal(views.at(-1).state, "failed");
  assert.equal(views.at(-1).error, "timeout");
  client.resend(view.id);
  await clock.advance(0);
  const sends = connection.framesOf("send");
  assert.equal(sends.length, 5);
  assert.ok(sends.every((s) => s.id === view.id && s.image.upload_id === "u/owner/slot1"), "one message, one upload");
  assert.deepEqual(uploads, ["u/owner/slot1"], "never uploaded twice");
  assert.deepEqual(sends[0].to, { kind: "user", id: "bob" });
});

test("a refused slot (unsupported_media_type) fails the photo with that code", async () => {
  const { clock, connection, client, views } = setup();
  connection.answer = (frame) => (frame.action === "upload"
    ? { type: "error", code: "unsupported_media_type", message: "no" } : { type: "sync", messages: [], more: false });
  client.sendImage({ file: "x.bmp", conversationId: "d_ab" });
  await clock.advance(0);
  assert.equal(views.at(-1).state, "failed");
  assert.equal(views.at(-1).error, "unsupported_media_type");
});

test("mediaUrl asks media_url for one message", async () => {
  const { clock, connection, client } = setup();
  connection.answer = (frame) => (frame.action === "media_url"
    ? { type: "media_url", conversation_id: frame.conversation_id, seq: frame.seq, url: "http://s3/b/k?sig", url_expires: 99 }
    : { type: "sync", messages: [], more: false });
  await clock.advance(0);
  assert.deepEqual(await client.mediaUrl("d_ab", 7), { url: "http://s3/b/k?sig", url_expires: 99 });
  assert.deepEqual(connection.framesOf("media_url").map((f) => [f.conversation_id, f.seq]), [["d_ab", 7]]);
});
