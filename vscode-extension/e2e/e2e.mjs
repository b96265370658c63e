#!/usr/bin/env node
// End-to-end: the built .vsix in a real VS Code (code-server in headless Chromium, via
// ../shared/tools/vscode-e2e), talking to the real codeglm server.
//
//   node e2e/e2e.mjs EXTENSION.vsix ARTIFACTS_DIR [DOCS_SCREENSHOT]
//
// 1. Python file: type, wait for ghost text, accept with Tab, save, check the file.
// 2. Python file: an explicit trigger (Trigger Inline Suggestion) gets several candidates;
//    Alt+] / Alt+[ (Show Next / Previous Inline Suggestion) cycle them; Tab takes the second.
// 3. Java file: type, wait for ghost text, accept one word with Ctrl+Right.
// 4. "CodeGeeX: Translate File..." on the Java file -> a Python file opens beside it.
// 5. Clicking the status bar item toggles completion (disabled / ready).
// 6. SIGKILL the server: the status bar says it restarts, a new server comes up, ghost text works.
// 7. After shutdown: every ghost text shown is in the server's answers (client LSP trace), the
//    explicit request got both cycled candidates, requests while typing one item each.
// Ends with "N passed, N failed". Env: VSCODE_E2E_DIR (setup.sh's dir), VSCODE_E2E_TOOLS.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const extDir = path.resolve(here, '..');
const repo = path.resolve(extDir, '..');
const tools = path.resolve(process.env.VSCODE_E2E_TOOLS || path.join(repo, '..', 'shared', 'tools', 'vscode-e2e'));
const {
  log, startCodeServer, launchBrowser, openWorkbench, openFile, waitForStatusBarItem, waitForGhostText,
  editorText, runCommand, SELECTORS,
} = await import(pathToFileURL(path.join(tools, 'vscode-e2e.mjs')).href);
const require = createRequire(import.meta.url);
const { testBackend, VENV_PYTHON } = require(path.join(extDir, 'out', 'test', 'support', 'model.js'));

const [vsixArg, artifactsArg, docsShotArg] = process.argv.slice(2);
if (!vsixArg || !artifactsArg) {
  console.error('usage: node e2e/e2e.mjs EXTENSION.vsix ARTIFACTS_DIR [DOCS_SCREENSHOT]');
  process.exit(2);
}
const vsix = path.resolve(vsixArg);
const artifacts = path.resolve(artifactsArg);
fs.mkdirSync(artifacts, { recursive: true });
const shot = (name) => path.join(artifacts, name);

const PY_START = 'import os\n\n\ndef add(a, b):\n    """Return the sum of a and b."""\n    ';
// The tiny random test model writes words, which the server drops as junk where code is
// expected (codeglm/syntax/guard.py): with it the cursor stands in a comment, where words
// are valid. With a trained model (CODEGLM_TEST_BACKEND='', the README picture) it types code.
const RANDOM_MODEL = testBackend() !== '';
const PY_TYPED = RANDOM_MODEL ? '# return' : 'return';
// A second Python file where the cursor is put after the comment: nothing typed, so the
// only request is the explicit one (trigger kind Invoked: up to 3 candidates, the first
// greedy, the others sampled with fixed seeds, so the same every time).
const CYCLE_START = 'import os\n\n\ndef mul(a, b):\n    """Return the product of a and b."""\n    ';
const CYCLE_TYPED = RANDOM_MODEL ? '# return' : 'return';
const JAVA_START = 'public class Greeter {\n    public static int add(int a, int b) {\n        ';
const JAVA_END = '\n    }\n}\n';
const JAVA_TYPED = RANDOM_MODEL ? '// return' : 'return';

const results = []; // [name, ok, detail]
let server; let browser; let page; let ws;
const ghostTexts = [];
const cycled = []; // the candidates shown one after the other in cycle.py

/**
 * The inlineCompletion requests in the client's verbose LSP trace, each with its
 * answer: [{ params, result }] (result null when it was cancelled or failed).
 */
function inlineCompletionExchanges(trace) {
  // a message is '[Trace - TIME] Sending request 'METHOD - (ID)'.' then 'Params: {' ... '}' (pretty JSON)
  const json = (at) => {
    if (trace[at] !== '{') return null; // e.g. 'Result: null'
    return JSON.parse(trace.slice(at, trace.indexOf('\n}', at) + 2));
  };
  const out = [];
  for (const m of trace.matchAll(/Sending request 'textDocument\/inlineCompletion - \((\d+)\)'\.\nParams: /g)) {
    // (ids start again with a restarted client: take the first answer after the request)
    const after = m.index + m[0].length;
    const reply = new RegExp(`Received response 'textDocument/inlineCompletion - \\(${m[1]}\\)' in \\d+ms\\.\\nResult: `).exec(trace.slice(after));
    out.push({ params: json(after), result: reply ? json(after + reply.index + reply[0].length) : null });
  }
  return out;
}

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push([name, true]);
    log(`PASS ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
    return true;
  } catch (e) {
    results.push([name, false, e.stack || String(e)]);
    log(`FAIL ${name}: ${e.stack || e}`);
    if (page) await page.screenshot({ path: shot(`failure-${results.length}.png`) }).catch(() => {});
    return false;
  }
}

/** Live processes that descend from `root` whose command line is `<python> -m lsp ...`. */
function serverPids(root) {
  const procs = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z') continue;
      procs.push({ pid: +d, ppid: +f[1], cmd: fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0') });
    } catch { /* gone */ }
  }
  const under = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) if (!under.has(p.pid) && under.has(p.ppid)) { under.add(p.pid); grew = true; }
  }
  return procs.filter((p) => under.has(p.pid) && p.cmd[1] === '-m' && p.cmd[2] === 'lsp').map((p) => p.pid);
}

async function waitFor(what, fn, timeoutMs, everyMs = 100) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const statusItem = () => page.locator('.statusbar-item', { hasText: 'CodeGeeX:' }).first();
const statusText = async () => ((await statusItem().textContent().catch(() => '')) || '').trim();

/** Type at the end of the active editor, wait for ghost text, return it. */
async function typeAndWaitForGhost(typed) {
  await page.keyboard.press('Control+End');
  await page.keyboard.type(typed, { delay: 30 });
  const ghost = await waitForGhostText(page, { timeout: 120000, retriggerMs: 8000 });
  log(`ghost text: ${JSON.stringify(ghost)}`);
  if (!ghost.trim()) throw new Error('the ghost text is blank');
  ghostTexts.push(ghost);
  return ghost;
}

let failedEarly = false;
try {
  const backend = testBackend();
  log(`backend: ${backend || '(the default model)'}; python: ${VENV_PYTHON}`);
  server = await startCodeServer({
    vsix: [vsix],
    settings: {
      'codeglm.pythonPath': VENV_PYTHON,
      'codeglm.backend': backend,
      'codeglm.debounceMs': 50,
      'codeglm.candidates': 3,
      'codeglm.maxTokens': 24,
      'codeglm.trace.server': 'verbose',
      'workbench.colorTheme': 'Default Dark Modern',
      'editor.fontSize': 15,
    },
  });
  ws = path.join(server.tmp, 'workspace');
  fs.mkdirSync(ws);
  fs.writeFileSync(path.join(ws, 'calc.py'), PY_START);
  fs.writeFileSync(path.join(ws, 'cycle.py'), CYCLE_START + CYCLE_TYPED + '\n');
  fs.writeFileSync(path.join(ws, 'Greeter.java'), JAVA_START + JAVA_END);
  browser = await launchBrowser({ tmp: server.tmp, viewport: { width: 1280, height: 720 } });
  page = browser.page;
  await openWorkbench(page, server.url, ws);
} catch (e) {
  failedEarly = true;
  results.push(['start code-server with the extension', false, e.stack || String(e)]);
  console.error(e);
}

if (!failedEarly) {
  await step('python: ghost text from the real server, accepted with Tab', async () => {
    await openFile(page, 'calc.py');
    // the extension activates on the Python file, starts the server, which loads the model
    await waitForStatusBarItem(page, 'CodeGeeX: ready', { timeout: 240000 });
    await page.screenshot({ path: shot('status-ready.png') });
    const ghost = await typeAndWaitForGhost(PY_TYPED);
    await page.screenshot({ path: shot('ghost-text-python.png') });
    if (docsShotArg) {
      fs.mkdirSync(path.dirname(path.resolve(docsShotArg)), { recursive: true });
      await page.screenshot({ path: path.resolve(docsShotArg) });
    }
    await page.keyboard.press('Tab');
    // (a long suggestion renders as several spans, so wait on the count, not one element)
    await waitFor('the ghost text gone after Tab',
      async () => (await page.locator(`${SELECTORS.activeEditor} :is(${SELECTORS.ghostText})`).count()) === 0, 10000);
    const firstLine = ghost.split('\n')[0];
    const text = await editorText(page);
    if (!text.includes(PY_TYPED + firstLine)) throw new Error(`after Tab the editor shows:\n${text}`);
    await page.keyboard.press('Control+S');
    const file = path.join(ws, 'calc.py');
    // (a save truncates, then writes: poll until the whole text is there)
    const want = PY_START + PY_TYPED + firstLine;
    await waitFor('the accepted text saved to calc.py', () => fs.readFileSync(file, 'utf8').startsWith(want), 10000)
      .catch(() => { throw new Error(`calc.py on disk:\n${fs.readFileSync(file, 'utf8')}\nwanted it to start with:\n${want}`); });
    await page.screenshot({ path: shot('accepted-python.png') });
  });

  await step('python: an explicit trigger offers several candidates, cycled with Show Next/Previous Inline Suggestion', async () => {
    await openFile(page, 'cycle.py');
    // the cursor at the end of the comment line (line 6), nothing typed: no automatic request
    await page.keyboard.press('Control+Home');
    for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('End');
    // editor.action.inlineSuggest.trigger: the provider gets trigger kind Invoke
    await runCommand(page, 'Trigger Inline Suggestion');
    const first = await waitForGhostText(page, { timeout: 120000, retriggerMs: 8000 });
    log(`candidate 1: ${JSON.stringify(first)}`);
    if (!first.trim()) throw new Error('the ghost text is blank');
    ghostTexts.push(first);
    cycled.push(first);
    await page.screenshot({ path: shot('candidate-1.png') });
    const ghostNow = async () => {
      const ed = SELECTORS.activeEditor;
      const line = (await page.locator(`${ed} .ghost-text-decoration`).allInnerTexts()).join('');
      const more = await page.locator(`${ed} .ghost-text`).allInnerTexts();
      return [line, ...more].join('\n').replace(/\u00a0/g, ' ');
    };
    // Alt+] = editor.action.inlineSuggest.showNext, Alt+[ = showPrevious (VS Code's own keys)
    await page.keyboard.press('Alt+BracketRight');
    const second = await waitFor('a different candidate after Show Next Inline Suggestion', async () => {
      const g = await ghostNow(); return g.trim() && g !== first ? g : null;
    }, 20000);
    log(`candidate 2: ${JSON.stringify(second)}`);
    ghostTexts.push(second);
    cycled.push(second);
    await page.screenshot({ path: shot('candidate-2.png') });
    await page.keyboard.press('Alt+BracketLeft');
    await waitFor('the first candidate again after Show Previous Inline Suggestion', async () => (await ghostNow()) === first, 20000)
      .catch(async () => { throw new Error(`after Show Previous the ghost text is ${JSON.stringify(await ghostNow())}, not ${JSON.stringify(first)}`); });
    log('Show Previous: candidate 1 again');
    await page.keyboard.press('Alt+BracketRight');
    await waitFor('the second candidate again', async () => (await ghostNow()) === second, 20000)
      .catch(async () => { throw new Error(`after Show Next the ghost text is ${JSON.stringify(await ghostNow())}, not ${JSON.stringify(second)}`); });
    // accept the second: the document gets it, not the first
    await page.keyboard.press('Tab');
    await waitFor('the ghost text gone after Tab',
      async () => (await page.locator(`${SELECTORS.activeEditor} :is(${SELECTORS.ghostText})`).count()) === 0, 10000);
    await page.keyboard.press('Control+S');
    const file = path.join(ws, 'cycle.py');
    const want = CYCLE_START + CYCLE_TYPED + second.split('\n')[0];
    await waitFor('the second candidate saved to cycle.py', () => fs.readFileSync(file, 'utf8').startsWith(want), 10000)
      .catch(() => { throw new Error(`cycle.py on disk:\n${fs.readFileSync(file, 'utf8')}\nwanted it to start with:\n${want}`); });
    if (fs.readFileSync(file, 'utf8').includes(CYCLE_TYPED + first.split('\n')[0])) throw new Error('the first candidate was inserted');
    await page.screenshot({ path: shot('accepted-candidate-2.png') });
  });

  await step('java: ghost text from the real server, one word accepted with Ctrl+Right', async () => {
    await openFile(page, 'Greeter.java');
    await page.keyboard.press('Control+Home');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('End');
    await page.keyboard.type(JAVA_TYPED, { delay: 30 });
    const ghost = await waitForGhostText(page, { timeout: 120000, retriggerMs: 8000 });
    log(`ghost text: ${JSON.stringify(ghost)}`);
    if (!ghost.trim()) throw new Error('the ghost text is blank');
    ghostTexts.push(ghost);
    await page.screenshot({ path: shot('ghost-text-java.png') });
    // partial accept: Ctrl+Right takes the next word of the ghost text, the rest stays grey
    const lineOf = async () => (await editorText(page)).split('\n').find((l) => l.includes(JAVA_TYPED)) ?? '';
    const full = `        ${JAVA_TYPED}${ghost.split('\n')[0]}`;
    const cursorColumn = async () => Number((await page.locator('.statusbar-item', { hasText: /^Ln \d+, Col \d+/ })
      .first().textContent()).match(/Col (\d+)/)[1]);
    const col0 = await cursorColumn();
    await page.keyboard.press('Control+ArrowRight');
    await waitFor('the cursor to move past the accepted word', async () => (await cursorColumn()) > col0, 10000);
    await page.screenshot({ path: shot('partial-accept-java.png') });
    // the rest (if the suggestion had more than one word) is still offered: dismiss it and
    // read what the buffer holds (the view lines include ghost text while it shows)
    const ghostCount = () => page.locator(`${SELECTORS.activeEditor} .ghost-text-decoration`).count();
    const restShown = await waitFor('the rest of the suggestion', async () => (await ghostCount()) > 0, 2000).catch(() => false);
    if (restShown) {
      await page.keyboard.press('Escape');
      await waitFor('the ghost text gone', async () => (await ghostCount()) === 0, 5000);
    }
    // (the accepted part may be just the leading space of " word": VS Code's word rule)
    const partial = await lineOf();
    const base = `        ${JAVA_TYPED}`;
    // a suggestion of several words must not be taken whole by one Ctrl+Right
    const severalWords = /\S\s+\S/.test(ghost.split('\n')[0]);
    if (!full.startsWith(partial) || partial.length <= base.length || (severalWords && partial.length >= full.length)) {
      throw new Error(`after Ctrl+Right the line is ${JSON.stringify(partial)}; the full suggestion was ${JSON.stringify(full)}`);
    }
    log(`accepted one word: ${JSON.stringify(partial)}`);
  });

  await step('CodeGeeX: Translate File... opens a Python file beside the Java file', async () => {
    const tabs0 = await page.locator('.editor-group-container').count();
    const pyBefore = fs.readdirSync(ws).filter((n) => n.endsWith('.py'));
    // (not runCommand(): it waits for the palette to close, but the command opens the language picker)
    await page.keyboard.press('F1');
    await page.waitForSelector(SELECTORS.quickOpenInput, { state: 'visible', timeout: 15000 });
    await page.keyboard.type('CodeGeeX: Translate File...');
    await page.locator(SELECTORS.quickOpenRow, { hasText: 'CodeGeeX: Translate File...' }).first().click({ timeout: 15000 });
    await page.locator(`${SELECTORS.quickOpenInput}[placeholder="Translate Java to..."]`).waitFor({ timeout: 15000 });
    await page.keyboard.type('Python');
    await page.locator(SELECTORS.quickOpenRow, { hasText: 'Python' }).first().waitFor({ timeout: 15000 });
    await page.keyboard.press('Enter');
    await page.locator('.notifications-toasts', { hasText: 'translating Greeter.java to Python' }).first()
      .waitFor({ timeout: 15000 }).then(() => page.screenshot({ path: shot('translate-progress.png') })).catch(() => {});
    // the server names the file after the target's conventions (greeter.py): find the new .py
    const newPy = () => fs.readdirSync(ws).filter((n) => n.endsWith('.py') && !pyBefore.includes(n));
    const created = await waitFor('a new Python file on disk', () => (newPy().length ? newPy()[0] : null), 400000, 250);
    const file = path.join(ws, created);
    await waitFor(`${created} saved with the translation`, () => fs.readFileSync(file, 'utf8').trim().length > 0, 20000)
      .catch(() => { throw new Error(`${created} is empty on disk`); });
    log(`translation in ${created}:\n${fs.readFileSync(file, 'utf8')}`);
    const activeTab = page.locator('.editor-group-container.active .tabs-container .tab.active');
    await waitFor(`${created} active in the editor`, async () => (await activeTab.textContent().catch(() => '') || '').includes(created), 20000);
    const groups = await page.locator('.editor-group-container').count();
    if (groups < Math.max(2, tabs0 + 1)) throw new Error(`the translation did not open beside the source (${groups} editor groups)`);
    const javaStillOpen = await page.locator('.editor-group-container:not(.active) .tab', { hasText: 'Greeter.java' }).count();
    if (!javaStillOpen) throw new Error('the Java file is no longer open in the other group');
    await page.screenshot({ path: shot('translated-beside.png') });
  });

  await step('clicking the status bar item turns completion off and on', async () => {
    await statusItem().click();
    await waitForStatusBarItem(page, 'CodeGeeX: disabled', { timeout: 20000 });
    await page.screenshot({ path: shot('disabled.png') });
    await statusItem().click();
    await waitForStatusBarItem(page, 'CodeGeeX: ready', { timeout: 20000 });
  });

  await step('a killed server is restarted and the status bar says so', async () => {
    const before = serverPids(server.pid);
    if (before.length !== 1) throw new Error(`expected one server process under code-server, found ${before}`);
    log(`killing the server, pid ${before[0]}`);
    process.kill(before[0], 'SIGKILL');
    const seen = await waitFor('the status bar to report the restart',
      async () => { const t = await statusText(); return /restarting server|\(restarted\)/.test(t) ? t : null; }, 30000, 50);
    log(`status bar: ${JSON.stringify(seen)}`);
    await page.screenshot({ path: shot('restarting.png') });
    const after = await waitFor('a new server process', () => {
      const now = serverPids(server.pid).filter((p) => !before.includes(p));
      return now.length ? now : null;
    }, 60000);
    log(`new server pid ${after}`);
    await waitForStatusBarItem(page, 'CodeGeeX: ready (restarted)', { timeout: 240000 });
    await page.screenshot({ path: shot('restarted-ready.png') });
    // and the new server completes: type in the (Python) translation that is open now
    await page.locator(`${SELECTORS.activeEditor}`).first().click();
    await typeAndWaitForGhost(RANDOM_MODEL ? '\n# x = ' : '\nx = ');
  });
}

// teardown: logs (with the client's LSP trace), then check the trace for the ghost texts
let stray = [];
if (browser) {
  fs.writeFileSync(shot('browser-console.log'), browser.consoleLines.join('\n'));
  stray = stray.concat(await browser.close());
}
if (server) stray = stray.concat(await server.stop({ saveLogsTo: path.join(artifacts, 'logs') }));
if (!failedEarly) {
  await step('every ghost text shown came from the server\'s inlineCompletion answers', async () => {
    const files = [];
    const walk = (d) => { for (const n of fs.readdirSync(d)) { const p = path.join(d, n); if (fs.statSync(p).isDirectory()) walk(p); else files.push(p); } };
    walk(path.join(artifacts, 'logs'));
    const trace = files.filter((f) => /CodeGeeX\.log$/.test(f)).map((f) => fs.readFileSync(f, 'utf8')).join('\n');
    if (!trace.includes('textDocument/inlineCompletion')) throw new Error('no inlineCompletion in the client trace');
    for (const g of ghostTexts) {
      const needle = JSON.stringify(g.split('\n')[0].trimEnd()).slice(1, -1);
      if (!trace.includes(needle)) throw new Error(`ghost text ${JSON.stringify(g)} is not in any server answer`);
    }
    // the cycled candidates: one explicit request (trigger kind 1 = Invoked) answered with
    // both; requests while typing (2 = Automatic) get one item each
    const requests = inlineCompletionExchanges(trace);
    const explicit = requests.filter((r) => r.params.context.triggerKind === 1 && r.params.textDocument.uri.endsWith('/cycle.py'));
    const firstLine = (t) => t.split('\n')[0].trimEnd();
    const both = explicit.find((r) => r.result && cycled.every((g) => r.result.items.some((i) => firstLine(i.insertText) === firstLine(g))));
    if (!both) throw new Error(`no explicit request for cycle.py answered with both cycled candidates (${explicit.length} explicit requests)`);
    log(`the explicit request answered ${both.result.items.length} items`);
    const many = requests.filter((r) => r.params.context.triggerKind === 2 && r.result && r.result.items.length > 1);
    if (many.length) throw new Error(`automatic requests answered with several items: ${JSON.stringify(many[0].result)}`);
    if (!/"candidates": 3/.test(trace)) throw new Error('the candidates setting is not in what the extension sent the server');
  });
}
results.push(['no processes left behind', stray.length === 0, stray.length ? `stray pids ${stray}` : undefined]);

const passed = results.filter((r) => r[1]).length;
const failed = results.length - passed;
for (const [name, ok, detail] of results) console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${!ok && detail ? `\n${detail}` : ''}`);
console.log(`vscode-extension e2e: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
