import { withMagic } from '../cellsource';
import { BODY_V1, generated } from './helpers';

describe('withMagic (the convert command)', () => {
  it('adds %%keras2torch on top of a plain Keras cell', () => {
    expect(withMagic('model = make_model()')).toEqual({
      ok: true,
      source: '%%keras2torch\nmodel = make_model()',
      changed: true
    });
  });

  it('leaves a cell that already has the magic (with options) alone', () => {
    for (const src of ['%%keras2torch\nm = f()', '%%keras2torch --name Foo\nm = f()']) {
      expect(withMagic(src)).toEqual({ ok: true, source: src, changed: false });
    }
  });

  it('refuses a cell with another cell magic, and a generated cell', () => {
    expect(withMagic('%%time\nm = f()')).toMatchObject({ ok: false });
    expect(withMagic(generated(BODY_V1).code)).toMatchObject({ ok: false });
  });
});
