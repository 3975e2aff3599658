import { LabIcon } from '@jupyterlab/ui-components';

/** Two arrows between "K" and a flame-ish dot: Keras -> PyTorch. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 4h2v7l5-7h2.4l-5 7 5.4 8H10.4L6.6 13.2 5 15.4V19H3z"/>
    <path d="M13 9h5V6.5l4 3.5-4 3.5V11h-5z"/>
    <circle cx="18" cy="18" r="2.6"/>
  </g>
</svg>`;

export const keras2torchIcon = new LabIcon({
  name: 'kerastorch-magic:convert',
  svgstr: svg
});
