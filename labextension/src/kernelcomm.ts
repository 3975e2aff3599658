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

type NotebookContext = DocumentRegistry.IContext<INotebookModel>;

/** Called after each upsert this client performed (e.g. to notify the user). */
export type UpsertListener = (
  result: IUpsertResultMessage,
  context: NotebookContext
) => void;

export interface IWatchOptions {
  onUpsert?: UpsertListener;
  /** The handshake with the kernel was made (true) or lost (false). */
  onHandshake?: (connected: boolean, context: NotebookContext) => void;
}

/** The open hello comm of each kernel connection (disposed on restart). */
const helloComms = new WeakMap<Kernel.IKernelConnection, Kernel.IComm>();
const watched = new WeakMap<NotebookContext, IWatchOptions>();

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
  if (!reply) {
    return; // another client executed the cell: it writes, we stay silent
  }
  if (!comm.isDisposed) {
    comm.send(reply as unknown as JSONObject);
  }
  try {
    watched.get(context)?.onUpsert?.(reply, context);
  } catch (error) {
    console.error('keras2torch: upsert listener failed', error);
  }
}

function notifyHandshake(context: NotebookContext, connected: boolean) {
  try {
    watched.get(context)?.onHandshake?.(connected, context);
  } catch (error) {
    console.error('keras2torch: handshake listener failed', error);
  }
}

/** Wire one `keras2torch` comm, whether the kernel or this client opened it. */
function attachComm(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection,
  comm: Kernel.IComm
): void {
  comm.onMsg = msg => {
    const data = msg.content.data;
    if (isHelloMessage(data)) {
      acknowledge(context, kernel, comm);
    } else if (isUpsertMessage(data)) {
      onUpsert(context, kernel, comm, msg);
    }
  };
  comm.onClose = () => {
    if (helloComms.get(kernel) === comm) {
      helloComms.delete(kernel);
      notifyHandshake(context, false);
    }
  };
}

function acknowledge(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection,
  comm: Kernel.IComm
) {
  helloComms.set(kernel, comm);
  if (!comm.isDisposed) {
    comm.send({ type: 'hello_ack', version: PROTOCOL_VERSION });
  }
  notifyHandshake(context, true);
}

const statusWatched = new WeakSet<Kernel.IKernelConnection>();

function registerTarget(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection
): void {
  if (!statusWatched.has(kernel)) {
    statusWatched.add(kernel);
    // A restart disposes the comms without closing them: the handshake is gone.
    kernel.statusChanged.connect((_, status) => {
      if (
        (status === 'restarting' ||
          status === 'autorestarting' ||
          status === 'dead') &&
        helloComms.has(kernel)
      ) {
        helloComms.delete(kernel);
        notifyHandshake(context, false);
      }
    });
  }
  // Re-registering replaces the previous callback: idempotent by design.
  kernel.registerCommTarget(
    COMM_TARGET,
    (comm: Kernel.IComm, openMsg: KernelMessage.ICommOpenMsg) => {
      attachComm(context, kernel, comm);
      const data = openMsg.content.data;
      if (isHelloMessage(data)) {
        acknowledge(context, kernel, comm);
      } else if (isUpsertMessage(data)) {
        // Tolerated: a kernel may open a fresh comm per run.
        onUpsert(context, kernel, comm, openMsg);
      }
    }
  );
}

/**
 * Greet a kernel that has `kerastorch_magic` loaded but never said hello to
 * this client (e.g. the page was reloaded after `%load_ext`): open the comm
 * from this side with a `hello`; the kernel records this client as having
 * the extension and answers `hello` (acknowledged like at `%load_ext`). Only
 * call it when the extension is known to be loaded in the kernel (otherwise
 * the kernel logs an unknown comm target).
 */
export function greetKernel(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection
): void {
  if (kernelHasHandshake(kernel)) {
    return;
  }
  const comm = kernel.createComm(COMM_TARGET);
  attachComm(context, kernel, comm);
  void comm.open({ type: 'hello', version: PROTOCOL_VERSION });
  // The comm_open precedes any later execute_request on the shell channel,
  // so the kernel knows this client before its next run.
  helloComms.set(kernel, comm);
  notifyHandshake(context, true);
}

/**
 * A client that connects to a kernel which loaded `kerastorch_magic` before
 * (a second tab, a reloaded page, Notebook 7 next to JupyterLab) never saw
 * its hello. Ask the kernel which `keras2torch` comms are open -- a plain
 * `comm_info_request`, harmless for kernels without the magic -- and greet
 * it when there are some, so that this client's first run already gets the
 * upsert (no `set_next_input` fallback, no duplicate cell).
 */
export async function greetIfLoaded(
  context: NotebookContext,
  kernel: Kernel.IKernelConnection
): Promise<boolean> {
  try {
    await kernel.info; // connected and answering
    if (kernel.isDisposed || kernelHasHandshake(kernel)) {
      return false;
    }
    const reply = await kernel.requestCommInfo({ target_name: COMM_TARGET });
    const content = reply.content;
    if (
      content.status !== 'ok' ||
      kernelHasHandshake(kernel) ||
      Object.keys(content.comms).length === 0
    ) {
      return false;
    }
    greetKernel(context, kernel);
    return true;
  } catch (error) {
    console.debug('keras2torch: comm_info probe failed', error);
    return false;
  }
}

/**
 * Handle `keras2torch` comms for this notebook document, on its current
 * kernel and every later one. Idempotent per document context (several
 * views of one notebook share the context and its kernel connection).
 */
export function watchNotebookContext(
  context: NotebookContext,
  options: IWatchOptions = {}
): void {
  if (watched.has(context)) {
    return;
  }
  watched.set(context, options);
  const sessionContext = context.sessionContext;
  const current = sessionContext.session?.kernel;
  if (current) {
    registerTarget(context, current);
    void greetIfLoaded(context, current);
  }
  sessionContext.kernelChanged.connect((_, change) => {
    notifyHandshake(context, kernelHasHandshake(change.newValue));
    if (change.newValue) {
      registerTarget(context, change.newValue);
      void greetIfLoaded(context, change.newValue);
    }
  });
}
