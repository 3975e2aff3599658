import { sha256Hex, utf8Encode } from '../sha256';
import { createHash } from 'crypto';

function nodeSha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

describe('sha256Hex', () => {
  it('matches the FIPS 180-4 test vectors', () => {
    expect(sha256Hex('')).toBe(
      'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    );
    expect(sha256Hex('abc')).toBe(
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    );
    expect(
      sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')
    ).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  });

  it('agrees with Node crypto around every padding boundary', () => {
    for (let n = 0; n <= 130; n++) {
      const text = 'x'.repeat(n);
      expect(sha256Hex(text)).toBe(nodeSha256(text));
    }
  });

  it('hashes the UTF-8 bytes, like Python str.encode()', () => {
    for (const text of [
      'é',
      'naïve café\n',
      '# 日本語のコメント\nx = 1\n',
      'emoji 🔥 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
      '\u0000\u007f\u0080\u07ff\u0800\uffff'
    ]) {
      expect(sha256Hex(text)).toBe(nodeSha256(text));
      expect(Array.from(utf8Encode(text))).toEqual(
        Array.from(Buffer.from(text, 'utf8'))
      );
    }
  });

  it('handles a large cell', () => {
    const text = 'self.conv = nn.Conv2d(3, 32, kernel_size=3)\n'.repeat(20000);
    expect(sha256Hex(text)).toBe(nodeSha256(text));
  });
});
