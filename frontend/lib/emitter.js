// A minimal event emitter: the client library runs in pages, the widget and Node tests alike.

/** @typedef {(data: any) => void} Listener */

export class Emitter {
  /** @type {Map<string, Set<Listener>>} */
  #listeners = new Map();

  /** Subscribe; returns the function that unsubscribes. @param {string} type @param {Listener} listener */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type)?.add(listener);
    return () => this.#listeners.get(type)?.delete(listener);
  }

  /** @param {string} type @param {unknown} [data] */
  emit(type, data) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(data);
      } catch (error) {
        // One broken listener (a UI bug) must not stop the protocol logic behind it.
        queueMicrotask(() => { throw error; });
      }
    }
  }
}
