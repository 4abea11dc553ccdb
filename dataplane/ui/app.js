// zeronas web file browser: a plain script, no framework and no build step.
//
// It uses the file API like any other client, with the token the user typed (kept in this
// tab's sessionStorage, never in a URL). Every name that comes from the share reaches the
// page through textContent or a DOM property, never as markup; the page's
// Content-Security-Policy allows no inline script or style besides.
'use strict';

const TOKEN_KEY = 'zeronas.token';
// Plain download links cannot send an Authorization header: the server honours this
// cookie for file reads only (never for a write), so links keep Range and resume.
const TOKEN_COOKIE = 'zeronas_token';

const $ = (id) => document.getElementById(id);

const state = {
  share: null, // {name, read_only, can_write} from GET /v1/shares
  folder: [], // the open folder: percent-encoded names
  cursors: [''], // the cursor that fetched each page seen so far
  page: 0,
  nextCursor: null,
  loading: 0, // bumped per listing, so a slow answer for an old folder or page is dropped
  statsLoading: 0, // the same for stats
  session: 0, // bumped at sign-out, so answers to a signed-out session are dropped
  anonymous: false, // the server let this page read without a token
  dialogs: Promise.resolve(), // questions wait for the one on screen
};

/** An error answered by the API: its HTTP status, `code` and `message`. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function authorization() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

// The share's name (not a secret), kept so that a cookie left from an earlier visit can be
// cleared before the server has told this page the name again.
const SHARE_KEY = 'zeronas.share';

/** The cookie's path: this share's files only. */
function cookiePath() {
  const name = state.share ? state.share.name : localStorage.getItem(SHARE_KEY);
  return name === null ? null : `/v1/shares/${encodeURIComponent(name)}/files/`;
}

/** Sets this tab's token as the download cookie; called again before each download, since
 * another tab may have signed out or in with another token meanwhile. */
function setCookie() {
  const t = token();
  const path = cookiePath();
  if (t && path) {
    document.cookie = `${TOKEN_COOKIE}=${encodeURIComponent(t)}; Path=${path}; SameSite=Strict`;
  }
}

function clearCookie() {
  const path = cookiePath();
  if (path) document.cookie = `${TOKEN_COOKIE}=; Path=${path}; SameSite=Strict; Max-Age=0`;
}

/** The API's JSON error of `status` from a body text, or a generic one. */
function errorFrom(status, text, fallback) {
  try {
    const body = JSON.parse(text);
    if (body && body.code) return new ApiError(status, body.code, body.message || body.code);
  } catch (_) {
    // Not JSON: a proxy's page, say.
  }
  return new ApiError(status, 'http_' + status, fallback || `the server answered ${status}`);
}

async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, {
      ...options,
      cache: 'no-store',
      headers: { ...authorization(), ...(options.headers || {}) },
    });
  } catch (_) {
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  if (!response.ok) throw errorFrom(response.status, await response.text(), response.statusText);
  return response;
}

function shareUrl(tail) {
  return '/v1/shares/' + encodeURIComponent(state.share.name) + '/' + tail;
}

function fileUrl(segments) {
  return shareUrl('files/' + segments.join('/'));
}

/** The text of a percent-encoded name; bytes that are not UTF-8 show as U+FFFD. */
function decodeName(segment) {
  const bytes = [];
  const encoder = new TextEncoder();
  const chars = [...segment]; // code points, not UTF-16 units
  for (let i = 0; i < chars.length; i++) {
    const hex = chars.slice(i + 1, i + 3).join('');
    if (chars[i] === '%' && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...encoder.encode(chars[i]));
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** Sizes in binary units: 999 B, 1.5 KiB, 12 MiB. */
function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit++;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function showMessage(text, info) {
  const box = $('message');
  box.textContent = text;
  box.classList.toggle('info', Boolean(info));
  box.hidden = false;
}

function clearMessage() {
  $('message').hidden = true;
}

/** Shows an API error; a 401 asks for a token again. */
function showError(error, what) {
  if (error.status === 401) {
    askForToken(error);
    return;
  }
  const prefix = what ? `${what}: ` : '';
  showMessage(`${prefix}${error.message}${error.code ? ` (${error.code})` : ''}`);
}

/** A modal yes/no question; resolves true only for the OK button. Questions asked while
 * one is on screen (two uploads that both meet an existing name) wait their turn. */
function confirmDialog(question, okLabel) {
  const answer = state.dialogs.then(() => askOnce(question, okLabel));
  state.dialogs = answer.catch(() => false);
  return answer;
}

function askOnce(question, okLabel) {
  const dialog = $('confirm');
  $('confirm-text').textContent = question;
  $('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      $('confirm-ok').onclick = null;
      $('confirm-cancel').onclick = null;
      dialog.onclose = null;
      if (dialog.open) dialog.close();
      $('confirm-text').textContent = '';
      resolve(answer);
    };
    $('confirm-ok').onclick = () => done(true);
    $('confirm-cancel').onclick = () => done(false);
    // Escape, or sign-out closing it. A close event queued by the previous question's
    // close() can arrive after this one opened: it is not this question's answer.
    dialog.onclose = () => {
      if (!dialog.open) done(false);
    };
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

// ---- signing in ----

function askForToken(error) {
  const had = token() !== '';
  state.session++;
  sessionStorage.removeItem(TOKEN_KEY);
  clearCookie();
  $('browser').hidden = true;
  $('stats').hidden = true;
  $('sign-out').hidden = true;
  $('entries').replaceChildren();
  if ($('confirm').open) $('confirm').close(); // its question belongs to the old session
  $('anonymous').hidden = !state.anonymous;
  clearMessage();
  let reason = 'This share needs a token.';
  if (error && (had || error.code === 'invalid_token')) {
    reason = 'The token was not accepted (it may have been rotated): enter a valid one.';
  } else if (!error) {
    reason = 'Signed out. Enter a token to open the share again.';
  }
  $('login-reason').textContent = reason;
  $('login').hidden = false;
  $('token').focus();
}

async function start() {
  const session = state.session;
  let body;
  try {
    body = await (await api('/v1/shares')).json();
    if (!body.shares || !body.shares.length) throw new ApiError(0, 'no_share', 'no share here');
  } catch (error) {
    if (error.status === 401 && token()) {
      // Would this server let the page read without a token? Then the prompt offers it.
      const anonymous = await fetch('/v1/shares', { cache: 'no-store' }).catch(() => null);
      state.anonymous = Boolean(anonymous && anonymous.ok);
    }
    showError(error, 'Cannot open the share');
    return;
  }
  if (session !== state.session) return;
  state.share = body.shares[0];
  localStorage.setItem(SHARE_KEY, state.share.name);
  const signedIn = token() !== '';
  if (signedIn) {
    setCookie();
  } else {
    state.anonymous = true;
    clearCookie(); // a cookie left by another tab must not stand in for no token
  }
  $('login').hidden = true;
  clearMessage();
  $('share-name').textContent = state.share.name;
  $('read-only-badge').hidden = state.share.can_write;
  $('read-only-badge').textContent = state.share.read_only ? 'read-only share' : 'read-only';
  $('sign-out').textContent = signedIn ? 'Sign out' : 'Sign in';
  $('sign-out').hidden = !signedIn && (state.share.can_write || state.share.read_only);
  for (const control of document.querySelectorAll('.write')) {
    control.hidden = !state.share.can_write;
  }
  $('browser').hidden = false;
  openFolderFromHash();
}

// ---- browsing ----

/** A segment of a hand-made URL in the form the API takes: characters that would change
 * the meaning of a path or query (`&`, `+`, `#`, a stray `%`...) percent-encoded. */
function normalizeSegment(segment) {
  return segment.replace(/%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$'()*,;:@%]/gu, (c) => {
    try {
      return encodeURIComponent(c);
    } catch (_) {
      return '%EF%BF%BD'; // a lone surrogate
    }
  });
}

function folderFromHash() {
  return location.hash
    .replace(/^#\/?/, '')
    .split('/')
    .map(normalizeSegment)
    .filter((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

function openFolderFromHash() {
  if (!state.share || $('browser').hidden) return;
  state.folder = folderFromHash();
  state.cursors = [''];
  state.page = 0;
  renderCrumbs();
  loadPage();
  loadStats();
}

function folderLink(segments, text) {
  const link = element('a', text);
  link.href = '#/' + segments.join('/');
  return link;
}

function renderCrumbs() {
  const crumbs = $('crumbs');
  crumbs.replaceChildren();
  const root = element('li');
  root.append(folderLink([], state.share.name));
  crumbs.append(root);
  state.folder.forEach((segment, i) => {
    const item = element('li');
    if (i === state.folder.length - 1) {
      item.append(element('span', decodeName(segment)));
      item.firstChild.setAttribute('aria-current', 'page');
    } else {
      item.append(folderLink(state.folder.slice(0, i + 1), decodeName(segment)));
    }
    crumbs.append(item);
  });
  document.title = `${[state.share.name, ...state.folder.map(decodeName)].join('/')} · zeronas`;
}

async function loadPage() {
  const ticket = ++state.loading;
  const limit = $('page-size').value;
  const cursor = state.cursors[state.page];
  // No Next or Previous until this page is here: a second click would reuse a cursor.
  state.nextCursor = null;
  $('prev').disabled = true;
  $('next').disabled = true;
  // The segments are percent-encoded already: the path parameter takes them as they are.
  let url = shareUrl(`list?path=${state.folder.join('/')}&limit=${limit}`);
  if (cursor) url += `&cursor=${cursor}`;
  let listing;
  try {
    listing = await (await api(url)).json();
  } catch (error) {
    if (ticket === state.loading) {
      $('entries').replaceChildren();
      $('prev').disabled = state.page === 0;
      showError(error, 'Cannot list this folder');
    }
    return;
  }
  if (ticket !== state.loading || $('browser').hidden) return;
  state.nextCursor = listing.next_cursor;
  try {
    renderEntries(listing.entries);
  } catch (error) {
    showMessage(`Cannot show this folder: ${error.message}`);
  }
  $('prev').disabled = state.page === 0;
  $('next').disabled = !state.nextCursor;
  $('page-number').textContent = `Page ${state.page + 1}`;
}

function renderEntries(entries) {
  const rows = entries.map((entry) => {
    const segment = entry.name_encoded || encodeURIComponent(entry.name);
    const path = [...state.folder, segment];
    const row = element('tr');
    const name = element('td', undefined, 'name');
    if (entry.type === 'dir') {
      name.append(folderLink(path, entry.name + '/'));
    } else if (entry.type === 'file' || entry.type === 'symlink') {
      const link = element('a', entry.name);
      link.href = fileUrl(path);
      link.download = entry.name;
      link.addEventListener('click', setCookie);
      name.append(link);
    } else {
      name.append(element('span', entry.name));
    }
    if (entry.type !== 'file' && entry.type !== 'dir') {
      name.append(element('span', entry.type, 'kind'));
    }
    const size = element('td', entry.type === 'dir' ? '—' : humanSize(entry.size), 'num');
    size.title = `${entry.size} bytes`;
    const modified = new Date(entry.mtime * 1000);
    const date = element('td', undefined, 'date');
    if (Number.isFinite(modified.getTime())) {
      const time = element('time', modified.toLocaleString());
      time.dateTime = modified.toISOString();
      date.append(time);
    } else {
      date.textContent = `${entry.mtime} s`; // beyond what a Date can hold
    }
    row.append(name, size, date);
    if (state.share.can_write) {
      const actions = element('td');
      const remove = element('button', 'Delete', 'danger');
      remove.type = 'button';
      remove.setAttribute('aria-label', `Delete ${entry.name}`);
      remove.addEventListener('click', () => deleteEntry(entry, path));
      actions.append(remove);
      row.append(actions);
    }
    return row;
  });
  $('entries').replaceChildren(...rows);
  $('empty').hidden = rows.length > 0 || state.page > 0;
}

async function loadStats() {
  const ticket = ++state.statsLoading;
  let stats;
  try {
    stats = await (await api(shareUrl('stats'))).json();
  } catch (error) {
    if (ticket !== state.statsLoading) return;
    if (error.status === 401) showError(error);
    else $('usage-text').textContent = `usage unknown (${error.code})`;
    return;
  }
  if (ticket !== state.statsLoading || $('browser').hidden) return;
  const capacity = stats.capacity_bytes ?? (stats.filesystem && stats.filesystem.size_bytes);
  const meter = $('usage-meter');
  meter.max = capacity || 1;
  meter.value = Math.min(stats.used_bytes, capacity || 0);
  meter.high = 0.9 * (capacity || 1);
  $('usage-text').textContent = capacity
    ? `${humanSize(stats.used_bytes)} of ${humanSize(capacity)} used${stats.capacity_bytes == null ? ' (disk)' : ''}`
    : `${humanSize(stats.used_bytes)} used`;
  $('file-count').textContent = `${stats.files.toLocaleString()} ${stats.files === 1 ? 'file' : 'files'}`;
  $('stats').hidden = false;
}

function refresh() {
  loadPage();
  loadStats();
}

// ---- changing the share ----

async function deleteEntry(entry, path) {
  const kind = entry.type === 'dir' ? 'folder' : 'file';
  const session = state.session;
  const confirmed = await confirmDialog(`Delete the ${kind} “${entry.name}”? This cannot be undone.`, 'Delete');
  if (!confirmed || session !== state.session) return;
  try {
    await api(fileUrl(path), { method: 'DELETE' });
    showMessage(`Deleted “${entry.name}”.`, true);
  } catch (error) {
    showError(error, `Cannot delete “${entry.name}”`);
    if (error.status === 401) return;
  }
  // The focused button goes with its row: keep the keyboard in the list.
  $('listing').focus();
  refresh();
}

/** PUT of one file; resolves with the finished XMLHttpRequest (any status). */
function put(url, file, replace, progress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('PUT', url);
    for (const [name, value] of Object.entries(authorization())) {
      request.setRequestHeader(name, value);
    }
    // Never replace a file by accident: the server refuses with 412 when the name exists.
    if (!replace) request.setRequestHeader('If-None-Match', '*');
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        progress.max = event.total;
        progress.value = event.loaded;
      }
    };
    request.onload = () => resolve(request);
    request.onerror = () => reject(new ApiError(0, 'network', 'the connection was lost'));
    request.onabort = () => reject(new ApiError(0, 'aborted', 'the upload was stopped'));
    request.ontimeout = () => reject(new ApiError(0, 'timeout', 'the upload timed out'));
    request.send(file);
  });
}

async function uploadOne(file, folder) {
  const item = element('li');
  const progress = element('progress');
  progress.max = Math.max(file.size, 1);
  progress.value = 0;
  progress.setAttribute('aria-label', `Uploading ${file.name}`);
  const status = element('span', 'uploading…');
  item.append(element('span', file.name), progress, status);
  $('uploads').append(item);
  try {
    await send(file, folder, progress, status);
  } finally {
    item.classList.add('done');
  }
}

/** The PUT (and, when the user agrees, the replacing PUT) of one file, its outcome shown
 * in `status`. */
async function send(file, folder, progress, status) {
  try {
    const url = fileUrl([...folder, encodeURIComponent(file.name)]);
    let request = await put(url, file, false, progress);
    if (request.status === 412) {
      const where = folder.length ? `“${decodeName(folder[folder.length - 1])}”` : 'the top folder';
      const session = state.session;
      const replace = await confirmDialog(`“${file.name}” already exists in ${where}. Replace it?`, 'Replace');
      if (!replace || session !== state.session) {
        status.textContent = 'skipped: a file of this name exists';
        return;
      }
      request = await put(url, file, true, progress);
    }
    if (request.status === 201 || request.status === 204) {
      progress.value = progress.max;
      status.textContent = request.status === 201 ? 'uploaded' : 'replaced';
      return;
    }
    throw errorFrom(request.status, request.responseText);
  } catch (error) {
    status.textContent = `failed: ${error.message}`;
    showError(error, `Cannot upload “${file.name}”`);
  }
}

async function upload(files) {
  if (!state.share || !state.share.can_write || $('browser').hidden) {
    showMessage('This share cannot be changed with the current token.');
    return;
  }
  // Finished uploads of an earlier batch make room.
  for (const item of $('uploads').querySelectorAll('li.done')) item.remove();
  const folder = state.folder;
  const session = state.session;
  for (const file of files) {
    // Signed out meanwhile (a 401, say): the rest is not sent without a token.
    if (session !== state.session) return;
    await uploadOne(file, folder);
  }
  if (session === state.session) refresh();
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  // Opens the share and puts the keyboard in the list (after the prompt had it).
  const open = () =>
    start().then(() => {
      if (!$('browser').hidden) $('listing').focus();
    });
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    $('token').value = '';
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
      open();
    }
  });
  $('sign-out').addEventListener('click', () => {
    const signingOut = token() !== '';
    askForToken(signingOut ? null : new ApiError(401, 'unauthorized', ''));
  });
  $('anonymous').addEventListener('click', () => {
    $('login').hidden = true;
    open();
  });
  $('picker').addEventListener('change', () => {
    const files = [...$('picker').files];
    $('picker').value = '';
    upload(files);
  });
  // The pressed button is disabled while its page loads, which drops the keyboard focus:
  // give it back once the page is here (or to the list when that button is now disabled).
  const refocus = (button) => () => (button.disabled ? $('listing') : button).focus();
  $('prev').addEventListener('click', () => {
    if (state.page > 0) {
      state.page--;
      loadPage().then(refocus($('prev')));
    }
  });
  $('next').addEventListener('click', () => {
    if (state.nextCursor) {
      state.cursors[state.page + 1] = state.nextCursor;
      state.page++;
      loadPage().then(refocus($('next')));
    }
  });
  $('page-size').addEventListener('change', () => {
    state.cursors = [''];
    state.page = 0;
    loadPage();
  });
  window.addEventListener('hashchange', () => {
    openFolderFromHash();
    // The link that had the focus is gone with the old rows: keep the keyboard in the list.
    $('listing').focus();
  });

  // Files dropped anywhere on the page upload into the open folder; without this the
  // browser would navigate away to show the dropped file.
  const zone = $('drop-zone');
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes('Files');
  const writable = () => state.share && state.share.can_write && !$('browser').hidden;
  document.addEventListener('dragover', (event) => {
    event.preventDefault(); // never let a drop navigate away from uploads in flight
    if (!carriesFiles(event) || !writable() || $('confirm').open) {
      event.dataTransfer.dropEffect = 'none';
      return;
    }
    zone.classList.add('dragging');
    $('drop-hint').hidden = false;
  });
  document.addEventListener('dragleave', (event) => {
    if (event.relatedTarget === null) {
      zone.classList.remove('dragging');
      $('drop-hint').hidden = true;
    }
  });
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    if (!carriesFiles(event) || $('confirm').open) return;
    zone.classList.remove('dragging');
    $('drop-hint').hidden = true;
    const files = [];
    let folders = 0;
    for (const item of event.dataTransfer.items) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry && entry.isDirectory) folders++;
      else if (item.kind === 'file') files.push(item.getAsFile());
    }
    if (folders) showMessage('Folders cannot be dropped: drop the files inside them.');
    if (files.length) upload(files);
  });

  start();
});
