// Known, harmless warnings from JupyterLab's own models under jsdom: they
// would otherwise bury real test output.
const noise = [
  'Invalid access: Add Yjs type to a document before reading data.',
  '[yjs#509] Not same Y.Doc',
  'Clipboard API not available'
];
const warn = console.warn.bind(console);
console.warn = (...args) => {
  const text = args.map(String).join(' ');
  if (!noise.some(n => text.includes(n))) {
    warn(...args);
  }
};
