import { createHash } from 'crypto';
import { NotebookModel } from '@jupyterlab/notebook';
import type { IUpsertMessage } from '../protocol';

/** Independent oracle: Node's sha256, not the one under test. */
export function nodeSha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export const SOURCE_ID = 'src-cell-1';
export const CLIENT = 'client-session-A';

export function markerLine(sourceId: string, hash: string): string {
  return (
    `# keras2torch: generated from cell ${sourceId}, body sha256 ${hash.slice(0, 16)}. ` +
    'Re-run that cell to regenerate; edits here are kept.'
  );
}

/** What the kernel sends: full code (marker + body) and the body's hash. */
export function generated(
  body: string,
  sourceId = SOURCE_ID,
  requestId = 'req-1'
): IUpsertMessage {
  const hash = nodeSha256(body);
  return {
    type: 'upsert',
    request_id: requestId,
    source_cell_id: sourceId,
    code: `${markerLine(sourceId, hash)}\n${body}`,
    hash,
    class_name: 'Net'
  };
}

export const BODY_V1 =
  'import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.dense = nn.Linear(4, 2)\n\n    def forward(self, x):\n        return self.dense(x)\n';
export const BODY_V2 = BODY_V1.replace('nn.Linear(4, 2)', 'nn.Linear(4, 3)');
export const BODY_V3 = BODY_V1.replace('nn.Linear(4, 2)', 'nn.Linear(4, 5)');

/** A notebook: [intro markdown, source cell, trailing code cell]. */
export function makeNotebook(): NotebookModel {
  const model = new NotebookModel();
  model.sharedModel.insertCells(0, [
    { cell_type: 'markdown', source: '# Intro', id: 'intro' },
    {
      cell_type: 'code',
      source: '%%keras2torch\nmodel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])',
      id: SOURCE_ID
    },
    { cell_type: 'code', source: 'print("after")', id: 'after' }
  ]);
  return model;
}

export function sources(model: NotebookModel): string[] {
  return model.sharedModel.cells.map(c => c.getSource());
}

export function ids(model: NotebookModel): string[] {
  return model.sharedModel.cells.map(c => c.id);
}

export function commMsg(data: object, session: string) {
  return {
    parent_header: {
      msg_id: 'exec-1',
      msg_type: 'execute_request',
      session,
      username: 'u',
      date: '',
      version: '5.3'
    },
    content: { comm_id: 'comm-1', data }
  } as any;
}
