/* The Softmax Book: the "Contents" list follows the reader in long sections.
 *
 * The theme marks a section in the page's table of contents when its heading enters
 * the top 30 % of the window.  Scrolling *up* into the middle of a section taller than
 * the window, no heading enters that band, so the mark stayed on the section below,
 * the one the reader had left.  This marks, after every scroll, the last section whose
 * heading lies above the band's lower edge: the section the reader is in, whichever
 * way they scrolled.  Where the theme's rule marks a section, the two agree.
 * tests/test_site_browser.py checks it on Chapter 8.
 */
(function () {
  "use strict";
  var BAND = 0.3;  // the theme's band: its IntersectionObserver's rootMargin -70 % below

  function entries() {
    var nav = document.querySelector("#pst-page-toc-nav");
    if (!nav) {
      return [];
    }
    return Array.prototype.map.call(nav.querySelectorAll("a.nav-link[href^='#']"), function (a) {
      var target = document.getElementById(decodeURIComponent(a.hash.slice(1)));
      var heading = target && (target.querySelector("h1, h2, h3, h4, h5, h6") || target);
      return { link: a, heading: heading };
    }).filter(function (e) { return e.heading; });
  }

  function mark(active, all) {
    all.forEach(function (e) {
      var on = e.link === active;
      e.link.classList.toggle("active", on);
      if (on) {
        e.link.setAttribute("aria-current", "true");
      } else {
        e.link.removeAttribute("aria-current");
      }
    });
    document.querySelectorAll("#pst-page-toc-nav li.toc-entry").forEach(function (li) {
      li.classList.toggle("active", !!active && li.contains(active));
    });
  }

  var list = null, pending = false;
  function update() {
    pending = false;
    list = list || entries();
    if (!list.length) {
      return;
    }
    var edge = window.innerHeight * BAND, current = null;
    list.forEach(function (e) {
      if (e.heading.getBoundingClientRect().top < edge) {
        current = e.link;
      }
    });
    if (current) {  // above the first heading the theme's own marks stand
      mark(current, list);
    }
  }

  window.addEventListener("scroll", function () {
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(update);
    }
  }, { passive: true });
})();
