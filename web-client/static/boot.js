// A classic script (runs in any browser): says so in plain words when the app's modules cannot
// run, instead of leaving a blank page. Kept out of index.html so a strict CSP needs no inline script.
(function () {
  var view = document.getElementById('view');
  if (!('noModule' in HTMLScriptElement.prototype)) {
    view.textContent = '此浏览器版本过旧，无法使用云帮办，请使用新版浏览器。';
    return;
  }
  setTimeout(function () {
    if (!window.cloudhelp) {
      view.innerHTML = '<p class="notice error" role="alert">页面未能加载，请检查网络后刷新页面。</p>';
    }
  }, 15000);
})();
