/** The jobs sidebar's icon: a small stack of queued boxes. */
import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="3" y="3" width="18" height="5" rx="1"/>
    <rect x="3" y="10" width="18" height="5" rx="1" opacity="0.75"/>
    <rect x="3" y="17" width="11" height="4" rx="1" opacity="0.5"/>
    <circle cx="18.5" cy="19" r="2.5"/>
  </g>
</svg>`;

export const jobsIcon = new LabIcon({ name: 'aifacility:jobs', svgstr });
