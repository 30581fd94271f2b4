// A one-time-code secret to enroll, as the account and invitation pages show it: the QR code
// (an SVG the server drew from the otpauth URI, shown as an image: it cannot run anything),
// the secret to type by hand, and the URI as text.
import { el } from '/web/assets/dom.js';

/** The enrollment box for `e` ({ secret, uri, qr_svg }). */
export function enrollBox(e) {
  return el('div', { id: 'enroll', class: 'enroll' },
    e.qr_svg ? el('img', {
      id: 'enroll-qr', alt: 'QR code of the one-time-code secret', width: '200', height: '200',
      src: `data:image/svg+xml,${encodeURIComponent(e.qr_svg)}`,
    }) : null,
    el('p', {}, 'Secret: ', el('code', { id: 'enroll-secret' }, e.secret)),
    el('p', { class: 'muted' }, 'URI: ', el('code', { id: 'enroll-uri' }, e.uri)));
}
