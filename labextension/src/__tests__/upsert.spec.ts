import { NotebookModel } from '@jupyterlab/notebook';
import { METADATA_KEY, parseMarker, splitCell } from '../protocol';
import {
  generatedCellInfo,
  handleUpsertMessage,
  mergeFallbackInsert,
  upsertGeneratedCell
} from '../upsert';
import {
  BODY_V1,
  BODY_V2,
  BODY_V3,
  CLIENT,
  SOURCE_ID,
  commMsg,
  generated,
  ids,
  makeNotebook,
  nodeSha256
} from './helpers';

function cellById(model: NotebookModel, id: string) {
  const cell = model.sharedModel.cells.find(c => c.id === id);
  if (!cell) {
    throw new Error(`no cell ${id}`);
  }
  return cell;
}

describe('upsertGeneratedCell', () => {
  let model: NotebookModel;
  beforeEach(() => {
    model = makeNotebook();
  });
  afterEach(() => {
    model.dispose();
  });

  it('inserts a new code cell right below the source cell', () => {
    const msg = generated(BODY_V1);
    const outcome = upsertGeneratedCell(model, msg);
    expect(outcome.status).toBe('inserted');
    expect(model.sharedModel.cells).toHaveLength(4);
    const cell = model.sharedModel.cells[2];
    expect(cell.id).toBe(outcome.cell_id);
    expect(cell.cell_type).toBe('code');
    expect(cell.getSource()).toBe(msg.code);
    expect(cell.getMetadata(METADATA_KEY)).toEqual({
      source_cell_id: SOURCE_ID,
      hash: nodeSha256(BODY_V1)
    });
    // Nothing else moved or changed; the new cell was not run.
    expect(ids(model)).toEqual(['intro', SOURCE_ID, outcome.cell_id, 'after']);
    expect(model.cells.get(2).toJSON()).toMatchObject({
      execution_count: null,
      outputs: []
    });
  });

  it('reports unchanged, and writes nothing, when the code is the same', () => {
    const msg = generated(BODY_V1);
    const first = upsertGeneratedCell(model, msg);
    const before = JSON.stringify(model.toJSON());
    const second = upsertGeneratedCell(model, generated(BODY_V1, SOURCE_ID, 'req-2'));
    expect(second).toEqual({ status: 'unchanged', cell_id: first.cell_id });
    expect(JSON.stringify(model.toJSON())).toBe(before);
  });

  it('updates the generated cell in place when the code changed', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    const cellModel = model.cells.get(2);
    // Simulate the user having run the generated cell.
    cellModel.sharedModel.transact(() => {
      (cellModel.sharedModel as any).execution_count = 7;
      (cellModel.sharedModel as any).setOutputs([
        { output_type: 'stream', name: 'stdout', text: 'old\n' }
      ]);
    });
    const msg = generated(BODY_V2, SOURCE_ID, 'req-2');
    const outcome = upsertGeneratedCell(model, msg);
    expect(outcome).toEqual({ status: 'updated', cell_id: first.cell_id });
    expect(model.sharedModel.cells).toHaveLength(4);
    const cell = cellById(model, first.cell_id!);
    expect(cell.getSource()).toBe(msg.code);
    expect((cell.getMetadata(METADATA_KEY) as any).hash).toBe(nodeSha256(BODY_V2));
    // Outputs of the previous code are stale: cleared.
    expect(model.cells.get(2).toJSON()).toMatchObject({
      execution_count: null,
      outputs: []
    });
  });

  it('keeps other metadata of the generated cell when updating', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    cellById(model, first.cell_id!).setMetadata('tags', ['mine']);
    upsertGeneratedCell(model, generated(BODY_V2));
    expect(cellById(model, first.cell_id!).getMetadata('tags')).toEqual(['mine']);
  });

  it('adopts a cell inserted by the set_next_input fallback (marker, no metadata)', () => {
    const fallback = generated(BODY_V1);
    // IPython's set_next_input inserts the text below, without metadata.
    model.sharedModel.insertCell(2, {
      cell_type: 'code',
      source: fallback.code,
      id: 'fallback'
    });
    expect(generatedCellInfo(cellById(model, 'fallback'))).toEqual({
      sourceCellId: SOURCE_ID,
      edited: false,
      hasMetadata: false
    });

    const same = upsertGeneratedCell(model, generated(BODY_V1, SOURCE_ID, 'r2'));
    expect(same).toEqual({ status: 'unchanged', cell_id: 'fallback' });
    expect(cellById(model, 'fallback').getMetadata(METADATA_KEY)).toEqual({
      source_cell_id: SOURCE_ID,
      hash: nodeSha256(BODY_V1)
    });

    const changed = generated(BODY_V2, SOURCE_ID, 'r3');
    expect(upsertGeneratedCell(model, changed)).toEqual({
      status: 'updated',
      cell_id: 'fallback'
    });
    expect(cellById(model, 'fallback').getSource()).toBe(changed.code);
    expect(model.sharedModel.cells).toHaveLength(4);
  });

  it('adopts a fallback cell with new code directly (update, no duplicate)', () => {
    model.sharedModel.insertCell(2, {
      cell_type: 'code',
      source: generated(BODY_V1).code,
      id: 'fallback'
    });
    const outcome = upsertGeneratedCell(model, generated(BODY_V2));
    expect(outcome).toEqual({ status: 'updated', cell_id: 'fallback' });
    expect(model.sharedModel.cells).toHaveLength(4);
  });

  it('keeps a fallback cell that the user edited', () => {
    const fallback = generated(BODY_V1);
    model.sharedModel.insertCell(2, {
      cell_type: 'code',
      source: fallback.code + '# my note\n',
      id: 'fallback'
    });
    const outcome = upsertGeneratedCell(model, generated(BODY_V1));
    expect(outcome.status).toBe('kept_edited');
    expect(cellById(model, 'fallback').getSource()).toBe(fallback.code + '# my note\n');
    expect(ids(model)[3]).toBe(outcome.cell_id);
  });

  it('never overwrites a generated cell the user edited: keeps it, inserts below', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    const edited = cellById(model, first.cell_id!);
    const userText = edited.getSource().replace('nn.Linear(4, 2)', 'nn.Linear(4, 2, bias=False)');
    edited.setSource(userText);
    const editedMeta = edited.getMetadata(METADATA_KEY);
    expect(generatedCellInfo(edited)?.edited).toBe(true);

    const msg = generated(BODY_V2, SOURCE_ID, 'req-2');
    const outcome = upsertGeneratedCell(model, msg);
    expect(outcome.status).toBe('kept_edited');
    expect(outcome.kept_cell_ids).toEqual([first.cell_id]);
    expect(outcome.message).toMatch(/edited/);
    // The user's cell is untouched, the new one sits right below it.
    expect(edited.getSource()).toBe(userText);
    expect(edited.getMetadata(METADATA_KEY)).toEqual(editedMeta);
    expect(ids(model)).toEqual([
      'intro',
      SOURCE_ID,
      first.cell_id,
      outcome.cell_id,
      'after'
    ]);
    expect(cellById(model, outcome.cell_id!).getSource()).toBe(msg.code);

    // The next run updates the fresh (unedited) cell, and adds nothing.
    const third = upsertGeneratedCell(model, generated(BODY_V3, SOURCE_ID, 'req-3'));
    expect(third).toEqual({ status: 'updated', cell_id: outcome.cell_id });
    expect(model.sharedModel.cells).toHaveLength(5);
    expect(edited.getSource()).toBe(userText);
  });

  it('counts an edit of the body only, or a removed marker line, as an edit', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    const cell = cellById(model, first.cell_id!);
    cell.setSource(splitCell(cell.getSource()).body); // marker line deleted
    expect(generatedCellInfo(cell)?.edited).toBe(true);
    const outcome = upsertGeneratedCell(model, generated(BODY_V1));
    expect(outcome.status).toBe('kept_edited');
  });

  it('updates the last unedited cell of the source; inserts below the last when all were edited', () => {
    const a = upsertGeneratedCell(model, generated(BODY_V1));
    cellById(model, a.cell_id!).setSource('# mine A\n');
    const b = upsertGeneratedCell(model, generated(BODY_V2));
    expect(b.status).toBe('kept_edited');
    cellById(model, b.cell_id!).setSource(generated(BODY_V2).code + '# mine B\n');
    const c = upsertGeneratedCell(model, generated(BODY_V3));
    expect(c.status).toBe('kept_edited');
    expect(c.kept_cell_ids).toEqual([a.cell_id, b.cell_id]);
    expect(ids(model)).toEqual([
      'intro',
      SOURCE_ID,
      a.cell_id,
      b.cell_id,
      c.cell_id,
      'after'
    ]);
    // Move the unedited one (c) above the edited ones: it is still the one updated.
    model.sharedModel.moveCell(4, 2);
    const d = upsertGeneratedCell(model, generated(BODY_V1));
    expect(d).toEqual({ status: 'updated', cell_id: c.cell_id });
    expect(model.sharedModel.cells).toHaveLength(6);
  });

  it('keeps generated cells of different source cells apart', () => {
    model.sharedModel.insertCell(2, {
      cell_type: 'code',
      source: '%%keras2torch --name Other\nm2 = ...',
      id: 'src-2'
    });
    const one = upsertGeneratedCell(model, generated(BODY_V1));
    const two = upsertGeneratedCell(model, generated(BODY_V1, 'src-2'));
    expect(one.status).toBe('inserted');
    expect(two.status).toBe('inserted');
    expect(ids(model)).toEqual([
      'intro',
      SOURCE_ID,
      one.cell_id,
      'src-2',
      two.cell_id,
      'after'
    ]);
  });

  it('reports an error and writes nothing when the source cell is missing', () => {
    const before = JSON.stringify(model.toJSON());
    const outcome = upsertGeneratedCell(model, generated(BODY_V1, 'gone'));
    expect(outcome.status).toBe('error');
    expect(outcome.message).toMatch(/gone/);
    expect(outcome.cell_id).toBeUndefined();
    expect(JSON.stringify(model.toJSON())).toBe(before);
  });

  it('records the hash of the text written even if the kernel mis-hashed', () => {
    const msg = { ...generated(BODY_V1), hash: '0'.repeat(64) };
    const outcome = upsertGeneratedCell(model, msg);
    expect(outcome.status).toBe('inserted');
    expect(outcome.message).toMatch(/kernel hash/);
    const again = upsertGeneratedCell(model, msg);
    expect(again.status).toBe('unchanged');
  });

  it('does everything in one shared-model transaction (one undo step)', () => {
    const shared = model.sharedModel as any;
    const ydoc = shared.ydoc;
    let transactions = 0;
    // Our writes carry the notebook as origin; JupyterLab's own observers
    // may follow up with housekeeping transactions of their own.
    const count = (tr: any) => {
      if (tr.origin === model.sharedModel) {
        transactions++;
      }
    };
    ydoc.on('afterTransaction', count);
    shared.undoManager.stopCapturing();
    upsertGeneratedCell(model, generated(BODY_V1));
    shared.undoManager.stopCapturing();
    upsertGeneratedCell(model, generated(BODY_V2));
    shared.undoManager.stopCapturing();
    ydoc.off('afterTransaction', count);
    expect(transactions).toBe(2);

    // One undo reverts the update as a whole: code and metadata together.
    shared.undo();
    const cell = model.sharedModel.cells[2];
    expect(cell.getSource()).toBe(generated(BODY_V1).code);
    expect((cell.getMetadata(METADATA_KEY) as any).hash).toBe(nodeSha256(BODY_V1));
    // And one more removes the inserted cell.
    shared.undo();
    expect(ids(model)).toEqual(['intro', SOURCE_ID, 'after']);
  });
});

describe('generatedCellInfo', () => {
  it('ignores plain code and markdown cells', () => {
    const model = makeNotebook();
    for (const cell of model.sharedModel.cells) {
      expect(generatedCellInfo(cell)).toBeNull();
    }
    model.sharedModel.insertCell(0, {
      cell_type: 'markdown',
      source: generated(BODY_V1).code
    });
    expect(generatedCellInfo(model.sharedModel.cells[0])).toBeNull();
    model.dispose();
  });

  it('parses the marker line of the protocol', () => {
    const { code, hash } = generated(BODY_V1);
    expect(parseMarker(splitCell(code).first)).toEqual({
      sourceCellId: SOURCE_ID,
      hashPrefix: hash.slice(0, 16)
    });
    expect(parseMarker('# keras2torch: something else')).toBeNull();
  });
});

describe('handleUpsertMessage', () => {
  let model: NotebookModel;
  beforeEach(() => {
    model = makeNotebook();
  });
  afterEach(() => {
    model.dispose();
  });

  it('acts on an upsert from this client and replies with the request id', () => {
    const msg = generated(BODY_V1, SOURCE_ID, 'req-42');
    const reply = handleUpsertMessage(model, commMsg(msg, CLIENT), CLIENT);
    expect(reply).toMatchObject({
      type: 'upsert_result',
      request_id: 'req-42',
      status: 'inserted'
    });
    expect(reply!.cell_id).toBe(model.sharedModel.cells[2].id);
  });

  it('ignores an upsert executed by another client session (other tab, collaborator)', () => {
    const before = JSON.stringify(model.toJSON());
    const reply = handleUpsertMessage(
      model,
      commMsg(generated(BODY_V1), 'client-session-B'),
      CLIENT
    );
    expect(reply).toBeNull();
    expect(JSON.stringify(model.toJSON())).toBe(before);
  });

  it('ignores messages with no parent, or that are not upserts', () => {
    const orphan = commMsg(generated(BODY_V1), CLIENT);
    orphan.parent_header = {};
    expect(handleUpsertMessage(model, orphan, CLIENT)).toBeNull();
    expect(
      handleUpsertMessage(model, commMsg({ type: 'hello', version: 1 }, CLIENT), CLIENT)
    ).toBeNull();
    expect(
      handleUpsertMessage(model, commMsg({ type: 'upsert' }, CLIENT), CLIENT)
    ).toBeNull();
    expect(model.sharedModel.cells).toHaveLength(3);
  });
});

describe('mergeFallbackInsert', () => {
  let model: NotebookModel;
  beforeEach(() => {
    model = makeNotebook();
  });
  afterEach(() => {
    model.dispose();
  });

  /** What JupyterLab does with a set_next_input payload: a new cell below the source. */
  function fallbackInsert(body: string, id: string): void {
    model.sharedModel.insertCell(2, {
      cell_type: 'code',
      source: generated(body).code,
      id
    });
  }
  const isNew = (id: string) => id.startsWith('new');

  it('leaves the first fallback cell of a source alone', () => {
    fallbackInsert(BODY_V1, 'new-1');
    expect(mergeFallbackInsert(model, SOURCE_ID, isNew)).toBeNull();
    expect(ids(model)).toEqual(['intro', SOURCE_ID, 'new-1', 'after']);
  });

  it('merges a second insert of the same code: one cell, adopted', () => {
    fallbackInsert(BODY_V1, 'old');
    fallbackInsert(BODY_V1, 'new-2');
    const outcome = mergeFallbackInsert(model, SOURCE_ID, isNew);
    expect(outcome).toEqual({ status: 'unchanged', cell_id: 'old' });
    expect(ids(model)).toEqual(['intro', SOURCE_ID, 'old', 'after']);
    expect(cellById(model, 'old').getMetadata(METADATA_KEY)).toEqual({
      source_cell_id: SOURCE_ID,
      hash: nodeSha256(BODY_V1)
    });
  });

  it('updates the earlier generated cell in place with new code', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    fallbackInsert(BODY_V2, 'new-2');
    const outcome = mergeFallbackInsert(model, SOURCE_ID, isNew);
    expect(outcome).toEqual({ status: 'updated', cell_id: first.cell_id });
    expect(ids(model)).toEqual(['intro', SOURCE_ID, first.cell_id, 'after']);
    expect(cellById(model, first.cell_id!).getSource()).toBe(generated(BODY_V2).code);
  });

  it('keeps an earlier cell the user edited, with the new code below it', () => {
    const first = upsertGeneratedCell(model, generated(BODY_V1));
    const edited = cellById(model, first.cell_id!);
    edited.setSource(edited.getSource() + '# mine\n');
    fallbackInsert(BODY_V1, 'new-2');
    const outcome = mergeFallbackInsert(model, SOURCE_ID, isNew);
    expect(outcome?.status).toBe('kept_edited');
    expect(ids(model)).toEqual(['intro', SOURCE_ID, first.cell_id, outcome!.cell_id, 'after']);
    expect(edited.getSource()).toBe(generated(BODY_V1).code + '# mine\n');
  });

  it('touches nothing that this run did not insert, nor other cells', () => {
    fallbackInsert(BODY_V1, 'old');
    fallbackInsert(BODY_V1, 'older');
    expect(mergeFallbackInsert(model, SOURCE_ID, isNew)).toBeNull();
    model.sharedModel.insertCell(2, { cell_type: 'code', source: 'x = 1', id: 'new-plain' });
    expect(mergeFallbackInsert(model, SOURCE_ID, isNew)).toBeNull();
    expect(mergeFallbackInsert(model, 'no-such-cell', isNew)).toBeNull();
    expect(ids(model)).toEqual(['intro', SOURCE_ID, 'new-plain', 'older', 'old', 'after']);
  });
});
