/**
 * The generated-cell upsert: pure logic over a notebook model, no widgets,
 * no kernel. Unit-tested on a real NotebookModel (src/__tests__).
 *
 * Rules (DESIGN.md §6 and the `keras2torch` protocol):
 * - A generated cell belongs to a source cell through `metadata.keras2torch`
 *   or, for a cell that IPython's `set_next_input` fallback inserted, through
 *   the marker line at its top (such a cell is adopted: metadata is added).
 * - A generated cell is unedited iff sha256(body) equals the hash recorded in
 *   its metadata (marker-only cells: starts with the marker's 16 hex digits).
 * - The last unedited generated cell of the source is updated in place (or
 *   left alone when its text is already the new code); when every generated
 *   cell was edited by the user they are all kept and a fresh cell goes below
 *   the last of them; with none, a new cell goes right below the source cell.
 * - All of it happens in one shared-model transaction (one undo step, one
 *   sync update for collaborators). The generated cell is never executed.
 * - A cell the fallback inserts below a source that already has generated
 *   cells is merged into them the same way (mergeFallbackInsert): re-running
 *   before the handshake never duplicates them.
 */

import type { KernelMessage } from '@jupyterlab/services';
import type { INotebookModel } from '@jupyterlab/notebook';
import {
  IGeneratedMetadata,
  IUpsertMessage,
  IUpsertOutcome,
  IUpsertResultMessage,
  METADATA_KEY,
  isUpsertMessage,
  parseMarker,
  splitCell
} from './protocol';
import { sha256Hex } from './sha256';

type SharedNotebook = INotebookModel['sharedModel'];
type SharedCell = SharedNotebook['cells'][number];

export interface IGeneratedCellInfo {
  /** Id of the cell it was generated from. */
  sourceCellId: string;
  /** The user changed the text since it was written. */
  edited: boolean;
  /** Known through metadata (false: marker line only, fallback-inserted). */
  hasMetadata: boolean;
}

function readMetadata(cell: SharedCell): IGeneratedMetadata | null {
  const value = cell.getMetadata(METADATA_KEY) as
    | Partial<IGeneratedMetadata>
    | undefined;
  if (
    value &&
    typeof value === 'object' &&
    typeof value.source_cell_id === 'string' &&
    typeof value.hash === 'string'
  ) {
    return { source_cell_id: value.source_cell_id, hash: value.hash };
  }
  return null;
}

/** Is this cell a generated one, from which source, and was it edited? */
export function generatedCellInfo(
  cell: SharedCell,
  hash: (text: string) => string = sha256Hex
): IGeneratedCellInfo | null {
  if (cell.cell_type !== 'code') {
    return null;
  }
  const source = cell.getSource();
  const meta = readMetadata(cell);
  const { first, body } = splitCell(source);
  if (meta) {
    return {
      sourceCellId: meta.source_cell_id,
      edited: hash(body) !== meta.hash.toLowerCase(),
      hasMetadata: true
    };
  }
  const marker = parseMarker(first);
  if (marker) {
    return {
      sourceCellId: marker.sourceCellId,
      edited: !hash(body).startsWith(marker.hashPrefix),
      hasMetadata: false
    };
  }
  return null;
}

function clearOutputs(cell: SharedCell): void {
  if (cell.cell_type === 'code') {
    const code = cell as SharedCell & {
      execution_count: number | null;
      setOutputs(outputs: []): void;
    };
    code.setOutputs([]);
    code.execution_count = null;
  }
}

function upsertInTransaction(
  shared: SharedNotebook,
  msg: IUpsertMessage,
  bodyHash: string
): IUpsertOutcome {
  const cells = shared.cells;
  const sourceIndex = cells.findIndex(c => c.id === msg.source_cell_id);
  if (sourceIndex < 0) {
    return {
      status: 'error',
      message:
        `The source cell ${msg.source_cell_id} is not in this notebook ` +
        '(deleted, or the notebook was reloaded since it ran); nothing was written.'
    };
  }

  const candidates: { index: number; cell: SharedCell; edited: boolean }[] =
    [];
  cells.forEach((cell, index) => {
    if (index === sourceIndex) {
      return;
    }
    const info = generatedCellInfo(cell);
    if (info && info.sourceCellId === msg.source_cell_id) {
      candidates.push({ index, cell, edited: info.edited });
    }
  });
  const metadata: IGeneratedMetadata = {
    source_cell_id: msg.source_cell_id,
    hash: bodyHash
  };

  const target = candidates.filter(c => !c.edited).pop();
  if (target) {
    const { cell } = target;
    if (cell.getSource() === msg.code) {
      // Same text: at most adopt a fallback-inserted cell (add metadata).
      const current = readMetadata(cell);
      if (!current || current.hash !== bodyHash) {
        cell.setMetadata(METADATA_KEY, { ...metadata });
      }
      return { status: 'unchanged', cell_id: cell.id };
    }
    cell.setSource(msg.code);
    cell.setMetadata(METADATA_KEY, { ...metadata });
    clearOutputs(cell); // they came from the previous code
    return { status: 'updated', cell_id: cell.id };
  }

  const newCell = {
    cell_type: 'code',
    source: msg.code,
    metadata: { [METADATA_KEY]: { ...metadata } }
  };
  if (candidates.length > 0) {
    const last = candidates[candidates.length - 1];
    const inserted = shared.insertCell(last.index + 1, newCell);
    const kept = candidates.map(c => c.cell.id);
    return {
      status: 'kept_edited',
      cell_id: inserted.id,
      kept_cell_ids: kept,
      message:
        kept.length === 1
          ? `The generated cell ${kept[0]} was edited since it was written; ` +
            'it was kept as is and the new code was inserted below it.'
          : `The ${kept.length} generated cells of this source were all edited; ` +
            'they were kept as they are and the new code was inserted below the last one.'
    };
  }
  const inserted = shared.insertCell(sourceIndex + 1, newCell);
  return { status: 'inserted', cell_id: inserted.id };
}

/**
 * Insert or update the generated cell for `msg` in `model`, in one
 * transaction. Never throws for a well-formed message.
 */
export function upsertGeneratedCell(
  model: INotebookModel,
  msg: IUpsertMessage
): IUpsertOutcome {
  // The hash recorded is the one of the text actually written, so a kernel
  // that mis-hashed cannot make every later run look like a user edit.
  const bodyHash = sha256Hex(splitCell(msg.code).body);
  const shared = model.sharedModel;
  let outcome: IUpsertOutcome = { status: 'error', message: 'not run' };
  shared.transact(() => {
    outcome = upsertInTransaction(shared, msg, bodyHash);
  });
  if (outcome.status !== 'error' && msg.hash.toLowerCase() !== bodyHash) {
    const note = `kernel hash ${msg.hash.slice(0, 16)} != body sha256 ${bodyHash.slice(0, 16)}; recorded the latter`;
    outcome.message = outcome.message ? `${outcome.message} (${note})` : note;
  }
  return outcome;
}

/**
 * After `sourceCellId` ran in this client: when IPython's `set_next_input`
 * fallback inserted a generated cell right below it (`isNew(id)`: the cell
 * was not in the notebook when the run was scheduled; marker line, no
 * metadata) while the source already had generated cells, treat that text as
 * an upsert: the inserted cell goes, and the source's existing generated
 * cells are updated in place or kept (edited), as over the comm. The fallback
 * is used when the kernel has no acknowledgement from this client yet, e.g.
 * "Restart Kernel and Run All": the handshake's answer waits behind the
 * queued cells. Returns null when there was nothing to merge.
 */
export function mergeFallbackInsert(
  model: INotebookModel,
  sourceCellId: string,
  isNew: (cellId: string) => boolean
): IUpsertOutcome | null {
  const shared = model.sharedModel;
  const cells = shared.cells;
  const sourceIndex = cells.findIndex(c => c.id === sourceCellId);
  const inserted = sourceIndex < 0 ? undefined : cells[sourceIndex + 1];
  if (!inserted || !isNew(inserted.id)) {
    return null;
  }
  const info = generatedCellInfo(inserted);
  if (!info || info.hasMetadata || info.sourceCellId !== sourceCellId) {
    return null;
  }
  const earlier = cells.some(
    (cell, index) =>
      index !== sourceIndex + 1 &&
      generatedCellInfo(cell)?.sourceCellId === sourceCellId
  );
  if (!earlier) {
    return null; // the first generated cell of this source: it stays
  }
  const code = inserted.getSource();
  // Two transactions: the notebook's cell list reflects a deletion only once
  // its transaction has ended.
  shared.transact(() => shared.deleteCell(sourceIndex + 1));
  return upsertGeneratedCell(model, {
    type: 'upsert',
    request_id: '',
    source_cell_id: sourceCellId,
    code,
    hash: sha256Hex(splitCell(code).body),
    class_name: ''
  });
}

/** The parts of a comm message the handler reads. */
export type CommMessageLike = Pick<
  KernelMessage.ICommMsgMsg,
  'parent_header' | 'content'
>;

/**
 * Handle one comm message for this notebook: act only when it is an upsert
 * sent during an execution requested by this client (`clientId` is the
 * kernel connection's client id, which becomes `header.session` of every
 * request it sends). Returns the reply to send, or null to stay silent
 * (another client -- a second tab or a collaborator -- executed the cell).
 */
export function handleUpsertMessage(
  model: INotebookModel,
  msg: CommMessageLike,
  clientId: string
): IUpsertResultMessage | null {
  const data = msg.content.data as unknown;
  if (!isUpsertMessage(data)) {
    return null;
  }
  const parent = msg.parent_header as Partial<KernelMessage.IHeader>;
  if (!parent || parent.session !== clientId) {
    return null;
  }
  return {
    type: 'upsert_result',
    request_id: data.request_id,
    ...upsertGeneratedCell(model, data)
  };
}
