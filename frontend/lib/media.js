// Photos in the browser (docs/protocol.md §14.1): what to upload (scaled down on a canvas when
// large), the tiny preview sent inside the message, and the upload itself, a multipart POST
// straight to S3 with the fields of the server's presigned slot (no bytes through Lambda).
// The decisions (planUpload, fitPreview) are pure and tested in Node; the canvas and the
// XMLHttpRequest are the browser's (injected in tests).

export const ACCEPTED_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];
export const MAX_SIDE = 2048; // longest side of what is uploaded
export const KEEP_BYTES = 1024 * 1024; // a small PNG/WebP/GIF goes as it is
export const MAX_BYTES = 10 * 1024 * 1024; // the server's default media_max_bytes
export const JPEG_QUALITY = 0.85;
export const PREVIEW_SIDE = 64;
export const PREVIEW_MAX_CHARS = 4096; // the server refuses a longer preview

/**
 * Fitted inside a square of `side`, keeping the aspect ratio; never enlarged, never 0.
 * @param {number} width @param {number} height @param {number} side
 */
export function fitted(width, height, side) {
  const scale = Math.min(1, side / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/**
 * What to upload for an image of this type, byte size and pixel size: the file as it is
 * ({keep: true}), or a JPEG re-encoded at {width, height}. A GIF up to the size limit is never
 * re-encoded (it may be animated); a PNG or WebP is kept when small in bytes and pixels; a JPEG
 * is always re-encoded, which also drops its metadata (a phone photo's location).
 * @param {{type: string, size: number, width: number, height: number}} image
 * @param {{maxSide?: number, keepBytes?: number, maxBytes?: number}} [limits]
 */
export function planUpload({ type, size, width, height }, { maxSide = MAX_SIDE, keepBytes = KEEP_BYTES, maxBytes = MAX_BYTES } = {}) {
  const small = width <= maxSide && height <= maxSide;
  if (type === "image/gif" && size <= maxBytes) return { keep: true, type, width, height };
  if ((type === "image/png" || type === "image/webp") && small && size <= keepBytes) return { keep: true, type, width, height };
  return { keep: false, type: "image/jpeg", ...fitted(width, height, maxSide) };
}

/**
 * The preview: the smallest data URL attempt that fits in `maxChars`, trying lower qualities,
 * then smaller sides. encode(side, quality) -> data URL. Null when nothing fits (sent without).
 * @param {(side: number, quality: number) => Promise<string | null>} encode
 * @param {{side?: number, maxChars?: number}} [limits]
 * @returns {Promise<string | null>}
 */
export async function fitPreview(encode, { side = PREVIEW_SIDE, maxChars = PREVIEW_MAX_CHARS } = {}) {
  for (const size of [side, Math.round(side * 0.75), Math.round(side / 2)]) {
    for (const quality of [0.7, 0.5, 0.3]) {
      const url = await encode(size, quality);
      if (typeof url === "string" && url.length <= maxChars && /^data:image\/(jpeg|png|webp|gif);base64,/.test(url)) return url;
    }
  }
  return null;
}

/** @typedef {Error & {code: string, status?: number}} MediaError */

/** @param {string} code @param {string} message @param {{status?: number}} [extra] @returns {MediaError} */
function mediaError(code, message, extra = {}) {
  return Object.assign(new Error(message), { code, ...extra });
}

/** Decodes a picked file into something a canvas can draw (the browser's createImageBitmap). @param {Blob} file */
async function decode(file) {
  try {
    return await globalThis.createImageBitmap(file);
  } catch {
    throw mediaError("not_an_image", "this file is not an image the browser can read");
  }
}

/** @param {number} width @param {number} height */
function canvas(width, height) {
  const node = globalThis.document.createElement("canvas");
  node.width = width;
  node.height = height;
  return node;
}

/** @param {ImageBitmap} bitmap @param {number} width @param {number} height @param {{background?: string | null}} [options] */
function draw(bitmap, width, height, { background = null } = {}) {
  const node = canvas(width, height);
  const context = node.getContext("2d");
  if (!context) throw mediaError("not_an_image", "this browser cannot draw the image");
  if (background) { context.fillStyle = background; context.fillRect(0, 0, width, height); } // JPEG has no alpha
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  return node;
}

/** @param {HTMLCanvasElement} node @param {string} type @param {number} quality @returns {Promise<Blob>} */
function toBlob(node, type, quality) {
  return new Promise((resolve, reject) => node.toBlob(
    (blob) => (blob ? resolve(blob) : reject(mediaError("not_an_image", "the image could not be encoded"))), type, quality));
}

/**
 * @typedef {object} PreparedImage
 * @property {Blob} blob @property {string} contentType @property {number} size
 * @property {number} width @property {number} height @property {string | null} preview
 */

/** The server's presigned upload slot (the `upload` frame's answer, §14.1). @typedef {{url: string, fields?: Record<string, string>, upload_id: string}} UploadSlot */

/**
 * A picked file -> {blob, contentType, size, width, height, preview}: what `upload` and `send`
 * declare. Runs in a page (canvas); refuses a type the server does not take.
 * @param {File} file @returns {Promise<PreparedImage>}
 */
export async function prepareImage(file) {
  if (!ACCEPTED_TYPES.includes(file.type)) {
    throw mediaError("unsupported_media_type", "only JPEG, PNG, WebP and GIF pictures can be sent");
  }
  const bitmap = await decode(file);
  try {
    const plan = planUpload({ type: file.type, size: file.size, width: bitmap.width, height: bitmap.height });
    const blob = plan.keep ? file
      : await toBlob(draw(bitmap, plan.width, plan.height, { background: "#fff" }), "image/jpeg", JPEG_QUALITY);
    if (blob.size > MAX_BYTES) throw mediaError("upload_too_large", "the picture is too large");
    const preview = await fitPreview(async (side, quality) => {
      const small = fitted(bitmap.width, bitmap.height, side);
      return draw(bitmap, small.width, small.height, { background: "#fff" }).toDataURL("image/jpeg", quality);
    });
    return { blob, contentType: plan.type, size: blob.size, width: plan.width, height: plan.height, preview };
  } finally {
    bitmap.close?.();
  }
}

/**
 * The presigned POST (§14.1): every entry of `fields` in order, then `file` last. S3 answers
 * 204. XMLHttpRequest, not fetch: only it reports upload progress. onProgress(fraction 0..1).
 * Rejects with code "upload_failed" (and `status`: 0 for a network error or abort).
 * @param {UploadSlot} slot @param {Blob} blob
 * @param {{onProgress?: (fraction: number) => void, XHR?: typeof XMLHttpRequest, FormDataImpl?: typeof FormData,
 *   timeoutMs?: number}} [options]
 * @returns {Promise<void>}
 */
export function uploadForm(slot, blob, { onProgress = /** @type {(fraction: number) => void} */ (() => {}), XHR = globalThis.XMLHttpRequest, FormDataImpl = globalThis.FormData,
  timeoutMs = 120_000 } = {}) {
  return new Promise(/** @type {(resolve: () => void, reject: (error: Error) => void) => void} */ ((resolve, reject) => {
    const form = new FormDataImpl();
    for (const [name, value] of Object.entries(slot.fields ?? {})) form.append(name, value);
    form.append("file", blob);
    const request = new XHR();
    request.open("POST", slot.url);
    request.timeout = timeoutMs;
    request.upload.onprogress = (event) => { if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total); };
    /** @param {number} status */
    const failed = (status) => reject(mediaError("upload_failed", `the upload failed (HTTP ${status})`, { status }));
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) { onProgress(1); resolve(); } else failed(request.status);
    };
    request.onerror = () => failed(0);
    request.onabort = () => failed(0);
    request.ontimeout = () => failed(0);
    request.send(form);
  }));
}
