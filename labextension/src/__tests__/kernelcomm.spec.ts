/**
 * The comm wiring, with a fake kernel connection and a real NotebookModel:
 * handshake, upsert from this client, upsert from another client, kernel
 * change.
 */
import { Signal } from '@lumino/signaling';
import { NotebookModel } from '@jupyterlab/notebook';
import {
  greetIfLoaded,
  greetKernel,
  kernelHasHandshake,
  watchNotebookContext
} from '../kernelcomm';
import { BODY_V1, CLIENT, commMsg, generated, makeNotebook } from './helpers';

class FakeComm {
  sent: any[] = [];
  opened: any = null;
  open(data: any) {
    this.opened = data;
    return {} as any;
  }
  isDisposed = false;
  onMsg: ((msg: any) => void) | null = null;
  onClose: ((msg: any) => void) | null = null;
  send(data: any) {
    this.sent.push(data);
    return {} as any;
  }
}

class FakeKernel {
  targets: { [name: string]: (comm: any, msg: any) => void } = {};
  isDisposed = false;
  constructor(readonly clientId: string) {}
  created: FakeComm[] = [];
  statusChanged = new Signal<any, string>(this);
  info = Promise.resolve({});
  openComms: { [id: string]: { target_name: string } } = {};
  commInfoRequests = 0;
  requestCommInfo() {
    this.commInfoRequests++;
    return Promise.resolve({ content: { status: 'ok', comms: this.openComms } });
  }
  registerCommTarget(name: string, cb: (comm: any, msg: any) => void) {
    this.targets[name] = cb;
  }
  createComm(): FakeComm {
    const comm = new FakeComm();
    this.created.push(comm);
    return comm;
  }
  /** The kernel opens a comm (what `%load_ext kerastorch_magic` does). */
  open(data: object, session = this.clientId): FakeComm {
    const comm = new FakeComm();
    const msg = commMsg(data, session);
    msg.content.target_name = 'keras2torch';
    this.targets['keras2torch'](comm, msg);
    return comm;
  }
}

function fakeContext(model: NotebookModel, kernel: FakeKernel | null) {
  const kernelChanged = new Signal<any, any>({});
  return {
    model,
    sessionContext: {
      session: kernel ? { kernel } : null,
      kernelChanged
    },
    kernelChanged
  } as any;
}

describe('keras2torch comm target', () => {
  let model: NotebookModel;
  beforeEach(() => {
    model = makeNotebook();
  });
  afterEach(() => {
    model.dispose();
  });

  it('answers the hello handshake and remembers it per kernel', () => {
    const kernel = new FakeKernel(CLIENT);
    watchNotebookContext(fakeContext(model, kernel));
    expect(kernelHasHandshake(kernel as any)).toBe(false);
    const comm = kernel.open({ type: 'hello', version: 1 });
    expect(comm.sent).toEqual([{ type: 'hello_ack', version: 1 }]);
    expect(kernelHasHandshake(kernel as any)).toBe(true);
    // A restart disposes the comms: the handshake is forgotten.
    comm.isDisposed = true;
    expect(kernelHasHandshake(kernel as any)).toBe(false);
  });

  it('writes the cell for an upsert executed by this client, and replies', () => {
    const kernel = new FakeKernel(CLIENT);
    watchNotebookContext(fakeContext(model, kernel));
    const comm = kernel.open({ type: 'hello', version: 1 });
    comm.onMsg!(commMsg(generated(BODY_V1, undefined, 'r-1'), CLIENT));
    expect(model.sharedModel.cells).toHaveLength(4);
    expect(comm.sent[1]).toEqual({
      type: 'upsert_result',
      request_id: 'r-1',
      status: 'inserted',
      cell_id: model.sharedModel.cells[2].id
    });
    comm.onMsg!(commMsg(generated(BODY_V1, undefined, 'r-2'), CLIENT));
    expect(comm.sent[2]).toMatchObject({ request_id: 'r-2', status: 'unchanged' });
    expect(model.sharedModel.cells).toHaveLength(4);
  });

  it('stays silent and writes nothing when another client executed the cell', () => {
    // Two clients (tabs / collaborators) on one kernel and one shared notebook.
    const mine = new FakeKernel(CLIENT);
    const theirs = new FakeKernel('client-session-B');
    watchNotebookContext(fakeContext(model, mine));
    watchNotebookContext(fakeContext(model, theirs));
    const myComm = mine.open({ type: 'hello', version: 1 });
    const theirComm = theirs.open({ type: 'hello', version: 1 });
    const upsert = commMsg(generated(BODY_V1), 'client-session-B');
    myComm.onMsg!(upsert);
    expect(myComm.sent).toHaveLength(1); // only the hello_ack
    expect(model.sharedModel.cells).toHaveLength(3);
    theirComm.onMsg!(upsert);
    expect(theirComm.sent[1]).toMatchObject({ status: 'inserted' });
    expect(model.sharedModel.cells).toHaveLength(4); // exactly one insert
  });

  it('reports an error to the kernel when the source cell is not in the notebook', () => {
    const kernel = new FakeKernel(CLIENT);
    watchNotebookContext(fakeContext(model, kernel));
    const comm = kernel.open({ type: 'hello', version: 1 });
    comm.onMsg!(commMsg(generated(BODY_V1, 'nope', 'r-9'), CLIENT));
    expect(comm.sent[1]).toMatchObject({ request_id: 'r-9', status: 'error' });
    expect(comm.sent[1].message).toMatch(/nope/);
  });

  it('registers the target again on every kernel change', () => {
    const first = new FakeKernel(CLIENT);
    const context = fakeContext(model, first);
    watchNotebookContext(context);
    watchNotebookContext(context); // idempotent
    const second = new FakeKernel('client-2');
    context.kernelChanged.emit({ name: 'kernel', oldValue: first, newValue: second });
    expect(second.targets['keras2torch']).toBeDefined();
    const comm = second.open({ type: 'hello', version: 1 });
    expect(comm.sent).toEqual([{ type: 'hello_ack', version: 1 }]);
  });

  it('accepts an upsert carried by the comm_open itself', () => {
    const kernel = new FakeKernel(CLIENT);
    watchNotebookContext(fakeContext(model, kernel));
    const comm = kernel.open(generated(BODY_V1, undefined, 'r-open'));
    expect(comm.sent).toEqual([
      expect.objectContaining({ request_id: 'r-open', status: 'inserted' })
    ]);
  });

  it('greets a kernel that loaded the extension before this page connected', () => {
    const kernel = new FakeKernel(CLIENT);
    const context = fakeContext(model, kernel);
    watchNotebookContext(context);
    greetKernel(context, kernel as any);
    const comm = kernel.created[0];
    expect(comm.opened).toEqual({ type: 'hello', version: 1 });
    expect(kernelHasHandshake(kernel as any)).toBe(true);
    comm.onMsg!(commMsg({ type: 'hello', version: 1 }, 'kernel')); // the kernel answers
    expect(comm.sent).toEqual([{ type: 'hello_ack', version: 1 }]);
    // Upserts then arrive on this comm like on a kernel-opened one.
    comm.onMsg!(commMsg(generated(BODY_V1, undefined, 'r-5'), CLIENT));
    expect(comm.sent[1]).toMatchObject({ request_id: 'r-5', status: 'inserted' });
    greetKernel(context, kernel as any); // already greeted: no second comm
    expect(kernel.created).toHaveLength(1);
  });

  it('tells the listener what this client wrote', () => {
    const kernel = new FakeKernel(CLIENT);
    const seen: string[] = [];
    watchNotebookContext(fakeContext(model, kernel), {
      onUpsert: r => seen.push(r.status),
      onHandshake: c => seen.push(c ? 'connected' : 'lost')
    });
    const comm = kernel.open({ type: 'hello', version: 1 });
    comm.onMsg!(commMsg(generated(BODY_V1), CLIENT));
    comm.onMsg!(commMsg(generated(BODY_V1), 'someone-else'));
    kernel.statusChanged.emit('restarting');
    expect(seen).toEqual(['connected', 'inserted', 'lost']);
    expect(kernelHasHandshake(kernel as any)).toBe(false);
  });

  it('greets, on connection, a kernel that already has keras2torch comms open', async () => {
    const kernel = new FakeKernel(CLIENT);
    kernel.openComms = { 'c-1': { target_name: 'keras2torch' } };
    const context = fakeContext(model, kernel);
    expect(await greetIfLoaded(context, kernel as any)).toBe(true);
    expect(kernel.created[0].opened).toEqual({ type: 'hello', version: 1 });

    const fresh = new FakeKernel('client-3'); // no magic loaded: nothing opened
    expect(await greetIfLoaded(fakeContext(model, fresh), fresh as any)).toBe(false);
    expect(fresh.commInfoRequests).toBe(1);
    expect(fresh.created).toHaveLength(0);
  });
});
