// What every IAIN page script needs: the CSRF token the server set for this session (sent back
// as X-CSRF-Token on every state-changing request), and two small element builders. Loaded first
// by every page (viewer/pages.py, _page).
(function () {
  "use strict";

  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)iain_csrf=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The same for list pages that style by class alone.
  function classed(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  window.iainCommon = { csrf, el, classed };
})();
