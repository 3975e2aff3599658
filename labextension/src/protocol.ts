/**
 * The `keras2torch` comm protocol shared with the kernel side
 * (kerastorch_magic/frontend.py). Version 1.
 *
 * kernel -> frontend
 *   comm_open data {type: "hello", version: 1}            at `%load_ext kerastorch_magic`
 *   comm_msg  data {type: "upsert", request_id, source_cell_id, code, hash, class_name}
 *             sent while the source cell executes, so its parent_header is that
 *             cell's execute_request (parent_header.session = executing client).
 * frontend -> kernel
 *   comm_msg  data {type: "hello_ack", version: 1}
 *   comm_msg  data {type: "upsert_result", request_id, status, cell_id, ...}
 *   comm_open data {type: "hello", version: 1}   a client that connected after
 *             `%load_ext` greets the kernel itself; the kernel answers hello.
 */

export const COMM_TARGET = 'keras2torch';
export const PROTOCOL_VERSION = 1;

/** Cell metadata key of a generated cell. */
export const METADATA_KEY = 'keras2torch';

export interface IHelloMessage {
  type: 'hello';
  version: number;
}

export interface IUpsertMessage {
  type: 'upsert';
  request_id: string;
  source_cell_id: string;
  /** Full text of the generated cell, marker line first. */
  code: string;
  /** Hex sha256 of the body (everything after the first line). */
  hash: string;
  class_name: string;
}

export type UpsertStatus =
  | 'inserted'
  | 'updated'
  | 'unchanged'
  | 'kept_edited'
  | 'error';

export interface IUpsertOutcome {
  status: UpsertStatus;
  /** Id of the generated cell that now holds `code` (absent on error). */
  cell_id?: string;
  /** kept_edited: the user-edited generated cells that were left untouched. */
  kept_cell_ids?: string[];
  /** Human-readable explanation (always set on error). */
  message?: string;
}

export interface IUpsertResultMessage extends IUpsertOutcome {
  type: 'upsert_result';
  request_id: string;
}

/** `metadata.keras2torch` of a generated cell. */
export interface IGeneratedMetadata {
  source_cell_id: string;
  /** Full hex sha256 of the body as written. */
  hash: string;
}

/**
 * First line of every generated cell:
 * `# keras2torch: generated from cell <id>, body sha256 <16 hex>. Re-run ...`
 * Only the stable prefix is parsed; the sentence after it is prose.
 */
const MARKER_RE =
  /^# keras2torch: generated from cell ([A-Za-z0-9_.:-]+), body sha256 ([0-9a-f]{16})\b/;

export interface IMarker {
  sourceCellId: string;
  hashPrefix: string;
}

export function parseMarker(firstLine: string): IMarker | null {
  const m = MARKER_RE.exec(firstLine);
  return m ? { sourceCellId: m[1], hashPrefix: m[2] } : null;
}

/** Split a cell's text like Python's `code.split("\n", 1)`. */
export function splitCell(code: string): { first: string; body: string } {
  const i = code.indexOf('\n');
  return i < 0
    ? { first: code, body: '' }
    : { first: code.slice(0, i), body: code.slice(i + 1) };
}

export function isUpsertMessage(data: unknown): data is IUpsertMessage {
  if (typeof data !== 'object' || data === null) {
    return false;
  }
  const d = data as { [key: string]: unknown };
  return (
    d.type === 'upsert' &&
    typeof d.request_id === 'string' &&
    typeof d.source_cell_id === 'string' &&
    typeof d.code === 'string' &&
    typeof d.hash === 'string'
  );
}

export function isHelloMessage(data: unknown): data is IHelloMessage {
  return (
    typeof data === 'object' &&
    data !== null &&
    (data as { type?: unknown }).type === 'hello'
  );
}
