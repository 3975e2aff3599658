/**
 * Cells that IPython's `set_next_input` fallback inserts are merged into the
 * generated cells already there (upsert.ts, mergeFallbackInsert), for the
 * runs this client requested: NotebookActions' signals fire only in the
 * client that runs the cells, and `executed` after JupyterLab inserted the
 * payload's cell.
 */

import type { ICellModel } from '@jupyterlab/cells';
import { NotebookActions } from '@jupyterlab/notebook';
import { IUpsertOutcome } from './protocol';
import { mergeFallbackInsert } from './upsert';

export function mergeFallbackInserts(
  onMerged: (outcome: IUpsertOutcome) => void
): void {
  // The ids of the notebook's cells when each run was scheduled: a cell not
  // among them when the run ends was inserted during it.
  const scheduled = new WeakMap<ICellModel, Set<string>>();
  NotebookActions.executionScheduled.connect((_, { notebook, cell }) => {
    if (notebook.model) {
      const ids = notebook.model.sharedModel.cells.map(c => c.id);
      scheduled.set(cell.model, new Set(ids));
    }
  });
  NotebookActions.executed.connect((_, { notebook, cell, success }) => {
    const before = scheduled.get(cell.model);
    scheduled.delete(cell.model);
    if (!success || !before || !notebook.model || cell.model.type !== 'code') {
      return;
    }
    const outcome = mergeFallbackInsert(
      notebook.model,
      cell.model.id,
      id => !before.has(id)
    );
    if (outcome) {
      onMerged(outcome);
    }
  });
}
