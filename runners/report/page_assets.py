"""The page's stylesheet and its two small scripts: table sorting, and the runs table drawn from JSON.

No charting code: every figure is Plotly's.
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;display:flex;color:#222}
nav{position:sticky;top:0;height:100vh;overflow:auto;min-width:230px;max-width:260px;padding:12px;
background:#f6f6f6;font-size:14px;box-sizing:border-box}
nav a{display:block;margin:3px 0;color:#0645ad;text-decoration:none}
main{padding:12px 28px;max-width:1300px;overflow-x:auto}
.scroll{overflow-x:auto;max-width:100%}.hint{color:#666;font-size:90%;margin:2px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
td.best{font-weight:bold;background:#e8f5e9}
.key{color:#777;font-family:monospace;margin-top:-10px}
.warn{background:#fff3cd;border:1px solid #e0c36b;padding:6px 10px;margin:8px 0}
.status-done{color:#2e7d32}.status-diverged{color:#c62828}.status-failed,.status-interrupted{color:#ad1457}
img{max-width:100%;border:1px solid #eee}
details pre{font-size:11px;max-width:700px;white-space:pre-wrap;text-align:left}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click', function(){
    var table = th.closest('table'), i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var rows = Array.from(table.tBodies[0].rows), asc = th.dataset.asc !== '1';
    function key(r){ var t = r.cells[i].dataset.v || r.cells[i].textContent; var n = parseFloat(t);
      return isNaN(n) ? t.toLowerCase() : n; }
    rows.sort(function(a, b){ var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
    rows.forEach(function(r){ table.tBodies[0].appendChild(r); });
    th.dataset.asc = asc ? '1' : '0';
  });
});
"""

# The runs table: rows from the JSON blob, filtered by status, sorted by a clicked header, 500 at a time.
RUNS_JS = """
(function(){
  var el = document.getElementById('runs-data'); if (!el) return;
  var rows = JSON.parse(el.textContent), body = document.getElementById('runs-body');
  var limit = 500, key = null, asc = true;
  var select = document.getElementById('runs-status'), count = document.getElementById('runs-count');
  function esc(t){ return String(t).replace(/[&<>"']/g, function(c){ return '&#' + c.charCodeAt(0) + ';'; }); }
  function draw(){
    var shown = rows.filter(function(r){ return !select.value || r[1] === select.value; });
    if (key !== null) shown.sort(function(a, b){ var x = parseFloat(a[key]), y = parseFloat(b[key]);
      if (isNaN(x) || isNaN(y)) { x = String(a[key]); y = String(b[key]); }
      return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
    body.innerHTML = shown.slice(0, limit).map(function(r){
      var n = r.length - 1;
      return '<tr class="run-row"><td class="run">' + esc(r[0]) + '</td><td class="status status-' + esc(r[1]) + '">'
        + esc(r[1]) + '</td>' + r.slice(2, n).map(function(c){ return '<td>' + esc(c) + '</td>'; }).join('')
        + '<td><details><summary>config</summary><pre>' + esc(JSON.stringify(r[n], null, 1))
        + '</pre></details></td></tr>';
    }).join('');
    count.textContent = Math.min(limit, shown.length) + ' of ' + shown.length + ' shown';
    document.getElementById('runs-more').style.display = shown.length > limit ? '' : 'none';
  }
  select.addEventListener('change', function(){ limit = 500; draw(); });
  document.getElementById('runs-more').addEventListener('click', function(){ limit += 500; draw(); });
  document.querySelectorAll('table.runs th').forEach(function(th){
    th.addEventListener('click', function(){
      var c = +th.dataset.col; asc = key === c ? !asc : true; key = c; draw();
    });
  });
  draw();
})();
"""
