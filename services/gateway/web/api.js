// The gateway's HTTP/JSON API, and the forms that post to it: one place that turns the
// gateway's error body ({error: {status, message, field}}) into a message beside the field.

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.field = error.field || '';
  }
}

// `body`: an object sent as JSON, or a File (an upload) sent as it is.
export async function api(method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  const raw = body instanceof Blob;
  if (body !== undefined) headers['Content-Type'] = raw ? (body.type || 'application/octet-stream') : 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method, headers, body: body === undefined || raw ? body : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.error || {});
  return data;
}

// A form's values as the request body: a field named "channel.displayName" nests.
export function formBody(form) {
  const body = {};
  for (const [name, value] of new FormData(form)) {
    const path = name.split('.');
    let target = body;
    for (const part of path.slice(0, -1)) target = target[part] ??= {};
    target[path.at(-1)] = String(value).trim();
  }
  return body;
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error, .form-error')) el.textContent = '';
}

// The server's refusal beside the field it names (focused), else at the form's foot.
export function showError(form, error) {
  const input = error.field ? form.elements.namedItem(error.field) : null;
  const message = error.message.replace(/^[\w.]+: /, '');
  if (input && input.id) {
    input.setAttribute('aria-invalid', 'true');
    document.getElementById(`${input.id}-error`).textContent = message;
    input.focus();
  } else {
    form.querySelector('.form-error').textContent = message;
  }
}

// Submit with the browser's own checks first (required, type=email, minlength), then the
// server's; `action(body)` runs the request, errors land beside their fields.
export function handleForm(form, action) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    if (!form.reportValidity()) return;
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(formBody(form));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  });
}

// A labelled input with the slot its error goes to (aria-describedby).
export function field(id, label, attrs = '') {
  return `<div class="field"><label for="${id}">${label}</label>
    <input id="${id}" ${attrs} aria-describedby="${id}-error">
    <p class="field-error" id="${id}-error" role="alert"></p></div>`;
}

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (text) => String(text ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
