/* The Softmax Book: display formulas on narrow screens.
 *
 * MathJax 3 does not break a display formula across lines, so on a phone a formula
 * wider than the text column gets a sideways scroll bar.  When one is at most a
 * quarter too wide, this shrinks it to fit (to 80 % of its size at the least, which
 * stays legible); a wider one keeps its scroll bar.  On a wide screen nothing changes.
 * It runs once MathJax has typeset the page, again whenever the window's width
 * changes, and after a click (which may open a hidden solution).
 * tests/test_site_browser.py checks the result at 390 px.
 */
(function () {
  "use strict";
  var SMALLEST = 0.8;

  function fit() {
    var formulas = document.querySelectorAll('mjx-container[display="true"]');
    formulas.forEach(function (el) {
      if (el.dataset.fitBase === undefined) {
        el.dataset.fitBase = el.style.fontSize || "";  // MathJax's own size, if it set one
      }
      el.style.fontSize = el.dataset.fitBase;
      el.dataset.fitScale = "1";
    });
    formulas.forEach(function (el) {  // measure after every reset: one layout pass
      var room = el.clientWidth, need = el.scrollWidth;
      if (room === 0 || need <= room + 1) {
        return;
      }
      var base = parseFloat(el.dataset.fitBase) || 100;
      var scale = Math.max(SMALLEST, Math.floor((room / need) * 1000) / 1000);
      el.style.fontSize = (base * scale).toFixed(1) + "%";
      el.dataset.fitScale = String(scale);
    });
  }

  var pending = false;
  function refit() {
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(function () {
        pending = false;
        fit();
      });
    }
  }

  function start() {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise) {
      mj.startup.promise.then(fit);
      window.addEventListener("resize", refit);
      // a click may reveal a hidden solution, whose formulas had no width to fit
      document.addEventListener("click", function () { window.setTimeout(refit, 50); });
    } else if (document.readyState !== "complete") {
      window.setTimeout(start, 50);  // MathJax's script may run after this one
    }  // a page that has loaded without MathJax has no formulas
  }

  start();
})();
