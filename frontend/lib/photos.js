// Sending a photo (docs/protocol.md §14.1) before it becomes an ordinary `send`: prepare it
// (scaled down, a preview), ask for an upload slot, POST the bytes to S3, then hand the `send`
// frame with `image` to the outbox, with the message id chosen at the start. Until then the
// message is "uploading" (with progress) or "failed" (Retry uploads again under the same id: a
// new slot if the old one expired, never a second message). Once in the outbox a photo is a
// message like any other: retransmitted with the same id and upload_id, resent the same way.
// Runs in the tab that holds the file, also when another tab holds the connection (only the
// `upload` and `send` frames go through the leader).

import { prepareImage, uploadForm } from "./media.js";

export const UPLOADING = "uploading";
const FAILED = "failed";

/** @typedef {import("./ids.js").Identity} Identity */
/** @typedef {import("./media.js").PreparedImage} PreparedImage */

/**
 * One photo on its way, until the outbox takes it.
 * @typedef {object} PhotoItem
 * @property {string} id @property {Blob} file @property {string} text @property {Identity | null} to
 * @property {string | null} conversationId @property {string} state @property {number} progress
 * @property {string | null} error @property {PreparedImage | null} prepared @property {string | null} local
 */

/**
 * @typedef {object} PhotoSenderOptions
 * @property {(request: {content_type: string, size: number}) => Promise<import("./media.js").UploadSlot>} requestUpload
 * @property {(send: {id: string, text: string, to: Identity | null, conversationId: string | null, image: object,
 *   local: string | null}) => unknown} send
 * @property {(view: object) => void} onChange
 * @property {(file: any) => Promise<PreparedImage>} [prepare]
 * @property {(slot: import("./media.js").UploadSlot, blob: Blob, options: {onProgress: (fraction: number) => void})
 *   => Promise<void>} [upload]
 * @property {(blob: Blob) => string | null} [objectUrl]
 */

export class PhotoSender {
  /** @type {Map<string, PhotoItem>} */
  #items = new Map(); // id -> item, while uploading or failed before the send

  /**
   * requestUpload({content_type, size}) -> slot frame; send({id, text, to, conversationId, image})
   * -> outbox view; onChange(view) for every state or progress change. prepare(file), upload(slot,
   * blob, {onProgress}) and objectUrl(blob) are the browser's unless given (tests).
   * @param {PhotoSenderOptions} options
   */
  constructor({ requestUpload, send, onChange, prepare = prepareImage, upload = uploadForm,
    objectUrl = (blob) => globalThis.URL?.createObjectURL?.(blob) ?? null }) {
    this.requestUpload = requestUpload;
    this.send = send;
    this.onChange = onChange;
    this.prepare = prepare;
    this.upload = upload;
    this.objectUrl = objectUrl;
  }

  /** @param {string} id */
  has(id) {
    return this.#items.has(id);
  }

  /**
   * A picked file to send (with an optional caption); its view at once.
   * @param {{id: string, file: Blob, text?: string, to?: Identity | null, conversationId?: string | null}} photo
   */
  start({ id, file, text = "", to = null, conversationId = null }) {
    const known = this.#items.get(id);
    if (known) return this.view(known);
    /** @type {PhotoItem} */
    const item = { id, file, text, to, conversationId, state: UPLOADING, progress: 0, error: null, prepared: null, local: null };
    this.#items.set(id, item);
    this.#run(item);
    return this.view(item);
  }

  /** The Retry of a failed upload: the same message id, the same prepared bytes. @param {string} id */
  retry(id) {
    const item = this.#items.get(id);
    if (!item || item.state !== FAILED) return null;
    Object.assign(item, { state: UPLOADING, progress: 0, error: null });
    this.#changed(item);
    this.#run(item);
    return this.view(item);
  }

  unsettled() {
    return [...this.#items.values()].map((item) => this.view(item));
  }

  /** @param {PhotoItem} item */
  view(item) {
    const prepared = item.prepared;
    return {
      id: item.id, text: item.text, to: item.to ?? null, conversation_id: item.conversationId ?? null, seq: null, time: null,
      state: item.state, error: item.error, attempts: 0, progress: item.progress,
      image: prepared
        ? { content_type: prepared.contentType, size: prepared.size, width: prepared.width, height: prepared.height,
          ...(prepared.preview ? { preview: prepared.preview } : {}), local: item.local }
        : { local: null },
    };
  }

  /** @param {PhotoItem} item */
  #changed(item) {
    this.onChange(this.view(item));
  }

  /** @param {PhotoItem} item */
  async #run(item) {
    try {
      const prepared = item.prepared ??= await this.prepare(item.file);
      item.local ??= this.objectUrl(prepared.blob);
      this.#changed(item);
      const slot = await this.requestUpload({ content_type: prepared.contentType, size: prepared.size });
      await this.upload(slot, prepared.blob, {
        onProgress: (fraction) => {
          if (item.state !== UPLOADING) return;
          item.progress = Math.min(1, fraction);
          this.#changed(item);
        },
      });
      const { contentType, size, width, height, preview } = prepared;
      const image = { upload_id: slot.upload_id, content_type: contentType, size, width, height, ...(preview ? { preview } : {}) };
      this.#items.delete(item.id); // from here on the outbox has it
      this.send({ id: item.id, text: item.text, to: item.to, conversationId: item.conversationId, image, local: item.local });
    } catch (error) {
      item.state = FAILED;
      item.error = error?.code ?? "upload_failed";
      this.#changed(item);
    }
  }
}

