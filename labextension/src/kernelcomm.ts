/**
 * The `keras2torch` comm target, wired to one notebook document.
 *
 * Registered on the notebook's kernel connection, and again on every kernel
 * change. The kernel opens the comm at `%load_ext kerastorch_magic` (hello);
 * upserts arrive on it while the magic runs. A frontend without this
 * extension has no target, so JupyterLab closes the comm at once: that is how
 * the kernel knows to use its `set_next_input` fallback.
 */

import type { DocumentRegistry } from '@jupyterlab/docregistry';
import type { INotebookModel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { JSONObject } from '@lumino/coreutils';
import {
  COMM_TARGET,
  IUpsertResultMessage,
  PROTOCOL_VERSION,
  isHelloMessage,
  isUpsertMessage
} from './protocol';
import { handleUpsertMessage } from './upsert';

/** The open hello comm of each kernel connection (disposed on restart). */
const helloComms = new WeakMap<Kernel.IKernelConnection, Kernel.IComm>();

/**
 * Has this kernel said hello since it (re)started, i.e. is
 * `kerastorch_magic` loaded there as far as this client knows?
 */
export function kernelHasHandshake(
  kernel: Kernel.IKernelConnection | null | undefined
): boolean {
  const comm = kernel ? helloComms.get(kernel) : undefined;
  return !!comm && !comm.isDisposed;
}

/** Resolves at the next hello from `kernel` (or false after `timeoutMs`). */
export function waitForHandshake(
  kernel: Kernel.IKernelConnection,
  timeoutMs: number
): Promise<boolean> {
  if (kernelHasHandshake(kernel)) {
    return Promise.resolve(true);
  }
  return new Promise(resolve => {
    const started = Date.now();
    const poll = () => {
      if (kernelHasHandshake(kernel)) {
        resolve(true);
      } else if (Date.now() - started > timeoutMs || kernel.isDisposed) {
        resolve(false);
      } else {
        setTimeout(poll, 50);
      }
    };
    poll();
  });
}

type NotebookContext = DocumentRegistry.IContext<INotebookModel>;

const watched = new WeakSet<NotebookContext>();

function sendReply(comm: Kernel.IComm, reply: IUpsertResultMessage): void {
  if (!comm.isDisposed) {
    comm.send(reply as unknown as JSONObject);
  }
}

function onUpsert(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection,
  comm: Kernel.IComm,
  msg: Pick<KernelMessage.ICommMsgMsg, 'parent_header' | 'content'>
): void {
  let reply: IUpsertResultMessage | null;
  try {
    reply = handleUpsertMessage(context.model, msg, kernel.clientId);
  } catch (error) {
    const data = msg.content.data as { request_id?: unknown };
    console.error('keras2torch: upsert failed', error);
    reply = {
      type: 'upsert_result',
      request_id: String(data.request_id ?? ''),
      status: 'error',
      message: `The extension failed to write the cell: ${String(error)}`
    };
  }
  if (reply) {
    sendReply(comm, reply);
  }
}

function registerTarget(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection
): void {
  // Re-registering replaces the previous callback: idempotent by design.
  kernel.registerCommTarget(
    COMM_TARGET,
    (comm: Kernel.IComm, openMsg: KernelMessage.ICommOpenMsg) => {
      comm.onMsg = msg => {
        if (isHelloMessage(msg.content.data)) {
          helloComms.set(kernel, comm);
          comm.send({ type: 'hello_ack', version: PROTOCOL_VERSION });
        } else if (isUpsertMessage(msg.content.data)) {
          onUpsert(context, kernel, comm, msg);
        }
      };
      comm.onClose = () => {
        if (helloComms.get(kernel) === comm) {
          helloComms.delete(kernel);
        }
      };
      const data = openMsg.content.data;
      if (isHelloMessage(data)) {
        helloComms.set(kernel, comm);
        comm.send({ type: 'hello_ack', version: PROTOCOL_VERSION });
      } else if (isUpsertMessage(data)) {
        // Tolerated: a kernel may open a fresh comm per run.
        onUpsert(context, kernel, comm, openMsg);
      }
    }
  );
}

/**
 * Handle `keras2torch` comms for this notebook document, on its current
 * kernel and every later one. Idempotent per document context (several
 * views of one notebook share the context and its kernel connection).
 */
export function watchNotebookContext(context: NotebookContext): void {
  if (watched.has(context)) {
    return;
  }
  watched.add(context);
  const sessionContext = context.sessionContext;
  const current = sessionContext.session?.kernel;
  if (current) {
    registerTarget(context, current);
  }
  sessionContext.kernelChanged.connect((_, change) => {
    if (change.newValue) {
      registerTarget(context, change.newValue);
    }
  });
}
