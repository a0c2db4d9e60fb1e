"""The console's pages: server-rendered HTML with a little hand-written JavaScript (nothing from the internet)."""

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console: log in</title>
<link rel="stylesheet" href="/static/console.css"></head>
<body><h1>TOROS console</h1>
<form class="login" method="post" action="/login">
<label>Name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<p class="error" id="message">{message}</p>
<button type="submit">Log in</button>
</form></body></html>
"""

OVERVIEW_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console</title>
<link rel="stylesheet" href="/static/console.css"></head>
<body data-role="{role}">
<h1>TOROS console <span class="muted">· {user} ({role})</span></h1>
<nav><a href="/">Overview</a> · <a href="/alerts">Alerts and candidates</a> · <a href="/tonight">Tonight</a></nav>
<div id="hold" class="banner" role="status" hidden><span class="what"></span>
<button type="button">Resume the robot</button> <span class="reason"></span></div>
<script src="/static/common.js"></script>
<form id="logout" method="post" action="/logout"><button type="submit">Log out</button></form>
<h2>Daemons</h2>
<table><thead><tr><th>module</th><th>state</th><th>clock</th><th>queue</th><th>running</th><th>activity</th>
<th>status (the current target, safety)</th></tr></thead>
<tbody id="daemons"></tbody></table>
<h2>Devices</h2>
<table><thead><tr><th>device</th><th>state</th><th>driver</th><th>message</th></tr></thead>
<tbody id="devices"></tbody></table>
<h2>Latest images</h2>
<div id="images" data-follow="{follow}"></div>
<h2>Calibration</h2>
<div id="calibration"><p class="muted">nothing calibrating</p></div>
<pre id="header" hidden></pre>
{actions}
<h2>Events <span class="muted" id="stream">connecting…</span></h2>
<form id="filters">
<select name="module"><option value="">every module</option><option>alert</option><option>telescope</option>
<option>preprocessor</option></select>
<select name="kind"><option value="">every kind</option><option>work_order_update</option><option>image_ready</option>
<option>calibration_progress</option><option>alert_processed</option><option>device_update</option>
<option>transient_candidate</option></select>
<input name="work_order" placeholder="work order"></form>
<div id="log"></div>
<h2>Replay a night</h2>
<form id="replay"><select name="module"><option>telescope</option><option>preprocessor</option><option>alert</option>
</select> <input name="night" type="date" required> <button type="submit">Replay</button>
<span class="reason"></span></form>
<div id="replayed" class="log"></div>
<script src="/static/overview.js"></script>
</body></html>
"""

ACTIONS = r"""
<h2>Actions</h2>
<section id="actions">
<div class="action"><button id="open" data-confirm="Really open the dome? Click again">Open the dome</button>
<span class="reason"></span></div>
<div class="action"><button id="close">Close the dome</button> <span class="reason"></span></div>
<div class="action">Night: <button id="prepare">Prepare (bias, darks)</button>
<button id="night-open" data-confirm="Really open for the night? Click again">Open for the night</button>
<button id="night-close">Close for the night</button> <span class="reason"></span></div>
<form id="observe">
<input name="name" placeholder="target" required> <input name="ra_deg" placeholder="RA deg" required>
<input name="dec_deg" placeholder="Dec deg" required> <input name="exposure_s" placeholder="exposure s" value="60">
<input name="count" placeholder="frames" value="1"> <input name="filter" placeholder="filter">
<button type="submit">Observe</button> <span class="reason"></span></form>
<form id="drill">
<select name="sample"><option value="">a shipped sample notice…</option></select> or
<input name="notice" type="file" accept=".xml,.json,application/json,text/xml" class="wide">
<button type="submit">Replay as a drill</button> <span class="reason"></span></form>
<form id="cancel">
<select name="module"><option>telescope</option><option>preprocessor</option><option>alert</option></select>
<input name="id" placeholder="work order id" required> <input name="reason" placeholder="reason" required>
<button type="submit">Cancel work order</button> <span class="reason"></span></form>
</section>
<script src="/static/actions.js"></script>
"""


def _page(title: str, body: str) -> str:
    """A page of the console: the header, its navigation and its body (scripts are static files: the
    Content-Security-Policy allows no inline script)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TOROS console: {title}</title>
<link rel="stylesheet" href="/static/console.css"></head>
<body data-role="{{role}}">
<h1>{title} <span class="muted">· {{user}} ({{role}})</span></h1>
<nav><a href="/">Overview</a> · <a href="/alerts">Alerts and candidates</a> · <a href="/tonight">Tonight</a></nav>
<div id="hold" class="banner" role="status" hidden><span class="what"></span>
<button type="button">Resume the robot</button> <span class="reason"></span></div>
<script src="/static/common.js"></script>
{body}
</body></html>
"""


ALERTS_PAGE = _page(
    "Alerts and candidates",
    """<h2>Alerts</h2><div id="alerts"><p class="muted">none yet</p></div>
<h2>Transient candidates</h2>
<table><thead><tr><th>name</th><th>alert</th><th>RA</th><th>Dec</th><th>mag</th><th>S/N</th><th>score</th>
<th>host</th><th>offset</th><th>detections</th><th>flags</th><th>light curve</th><th>real or bogus</th>
<th>reports</th></tr></thead><tbody id="candidates"></tbody></table>
<div id="triplets"></div>
<script src="/static/alerts.js"></script>""",
)

TONIGHT_PAGE = _page(
    "Tonight",
    """<p id="night" class="muted">asking the telescope…</p>
<img id="plan" alt="tonight's plan" hidden>
<h2>Observed</h2>
<table><thead><tr><th>target</th><th>start</th><th>end</th><th>frames</th></tr></thead><tbody id="observed"></tbody></table>
<h2>Planned (remaining)</h2>
<table><thead><tr><th>target</th><th>start</th><th>end</th><th>state</th></tr></thead><tbody id="blocks"></tbody></table>
<h2>Not observable tonight</h2>
<table><thead><tr><th>target</th><th>why</th></tr></thead><tbody id="unobservable"></tbody></table>
<script src="/static/tonight.js"></script>""",
)

PAGES = {"/alerts": ALERTS_PAGE, "/tonight": TONIGHT_PAGE}
