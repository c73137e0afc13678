"The explorer in a real browser: JupyterLab on localhost opens a notebook that builds the explorer on a finished smoke run, in headless Chromium."
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from PIL import Image
from ens_distill.core import get_config
from ens_distill.report import _chromium, open_page

ROOT = Path(__file__).resolve().parents[1]
SHOT = ROOT/'reports'/'explorer-lab.png'   # the README's screenshot: ENS_DISTILL_SHOTS=1 refreshes it
JUPYTER = Path(sys.executable).with_name('jupyter')
HAS_LAB = JUPYTER.exists() and shutil.which('jupyter-lab', path=str(JUPYTER.parent)) is not None

# About 40 s on quiet cores of the 2-core CPU (a smoke run, a JupyterLab server, a kernel): not slow, so every `make test` runs it.
pytestmark = [pytest.mark.skipif(_chromium() is None, reason='headless Chromium not installed (Debian: apt-get install -y chromium)'),
              pytest.mark.skipif(not HAS_LAB, reason='JupyterLab not installed in this environment (make setup installs it)')]

# Runs in the JupyterLab page: wait for the app and the notebook's kernel, run every cell, find the explorer's
# controls and plot, change the prompt, wait for the plot to be redrawn.
LAB_JS = r"""(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, what, s) => { for (const t0 = Date.now(); Date.now() - t0 < s * 1000; await sleep(250)) { try { const v = f(); if (v) return v; } catch (e) {} }
                                        throw new Error(`timed out after ${s} s waiting for ${what}`); };
  const app = await until(() => window.jupyterapp, 'the JupyterLab app', 120); await app.restored;
  const panel = await until(() => [...app.shell.widgets('main')].find(w => w.sessionContext), 'the notebook', 120);
  app.shell.activateById(panel.id); app.shell.collapseLeft(); await panel.sessionContext.ready;
  await until(() => panel.sessionContext.session?.kernel?.status === 'idle', 'an idle kernel', 120);
  await app.commands.execute('notebook:run-all-cells');
  const nb = panel.node, q = s => nb.querySelector(s), img = () => q('.widget-output img, .jupyter-widgets-output-area img');
  const first = await until(() => img()?.src, 'the distribution plot (stderr: ' + [...nb.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')].map(e => e.textContent).join(' | ').slice(0, 400) + ')', 240);
  const prompt = q('.widget-textarea textarea'), runs = q('.widget-dropdown select');
  const out = {widgets: nb.querySelectorAll('.jupyter-widgets').length, prompt: prompt?.value, runs: runs ? [...runs.options].map(o => o.textContent) : null,
               rules: [...nb.querySelectorAll('.widget-toggle-buttons button')].map(b => b.textContent.trim()),
               plot: [img().naturalWidth, img().naturalHeight]};
  prompt.value = 'def add(a, b):'; prompt.dispatchEvent(new Event('input', {bubbles: true}));
  out.redrawn = (await until(() => img()?.src !== first && img()?.complete && img().naturalWidth ? img().src : null, 'the plot to follow the new prompt', 120)) !== first;
  await sleep(500);
  return out;
})()"""


def _free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab_dir(tmp_path_factory):
    "A folder with a finished smoke run and a notebook that opens the explorer on it."
    import nbformat
    from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell
    from ens_distill.pipeline import run_method
    from ens_distill.runs import run_path
    d = tmp_path_factory.mktemp('lab')
    cfg = get_config('smoke', out_dir=str(d/'runs'), cache_dir=str(d/'cache'))
    run_method(cfg, progress=False, verbose=False)
    name = run_path(cfg).name
    nb = new_notebook(cells=[new_markdown_cell('# The explorer on a smoke run'),
                             new_code_cell(f"from ens_distill.explorer import explore\nexplore('runs/{name}', 'Once upon a time')")],
                      metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')))
    nbformat.write(nb, str(d/'explore.ipynb'))
    s = d/'settings'/'@jupyterlab'/'apputils-extension'; s.mkdir(parents=True)   # no news or update toasts over the page
    (s/'notification.jupyterlab-settings').write_text(json.dumps(dict(fetchNews='false', checkForUpdates=False)))
    return d, name


@pytest.fixture(scope='module')
def lab(lab_dir):
    "A JupyterLab server on localhost serving `lab_dir` (its URL base and token); stopped afterwards."
    d, _ = lab_dir
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(d/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(d/'workspaces'),
               JUPYTER_RUNTIME_DIR=str(d/'runtime'), PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])))
    env.pop('ENS_DISTILL_STATIC', None)
    log = open(d/'lab.log', 'w')
    p = subprocess.Popen([str(JUPYTER), 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--IdentityProvider.token={token}',
                          f'--ServerApp.root_dir={d}', '--LabApp.expose_app_in_browser=True', '--ServerApp.port_retries=0', '--allow-root'],
                         cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(600):
            if p.poll() is not None: pytest.fail(f'jupyter lab exited ({p.returncode}): ' + (d/'lab.log').read_text()[-2000:])
            try:
                with urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: time.sleep(.2)
        else: pytest.fail('jupyter lab did not answer within 2 minutes: ' + (d/'lab.log').read_text()[-2000:])
        yield base, token
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):                      # the server and its kernels
            try: os.killpg(p.pid, sig)
            except ProcessLookupError: break
            try: p.wait(20); break
            except subprocess.TimeoutExpired: pass
        log.close()


def test_explorer_renders_and_follows_the_prompt_in_jupyterlab(lab, lab_dir, tmp_path):
    "The explorer's controls and distribution plot render in JupyterLab (headless Chromium) and the plot is redrawn when the prompt changes."
    (base, token), (d, name) = lab, lab_dir
    png = tmp_path/'explorer-lab.png'
    try: r = open_page(f'{base}/lab/tree/explore.ipynb?token={token}&reset', LAB_JS, png, width=1400, height=1120, timeout=420)
    except Exception as e: raise AssertionError(f"{e}\n--- jupyter lab log ---\n{(d/'lab.log').read_text()[-3000:]}") from None
    assert r['widgets'] >= 4 and r['prompt'] == 'Once upon a time', r                          # the VBox, dropdown, prompt, rule picker, output
    assert r['runs'] and r['runs'][0].endswith(name) and r['rules'] == ['mean', 'product', 'weighted'], r
    assert min(r['plot']) > 200, r                                                                # a real figure, not a broken image
    assert r['redrawn'], r
    Image.open(png).verify()
    if os.environ.get('ENS_DISTILL_SHOTS'): shutil.copy(png, SHOT)                                # refresh the README's screenshot
