/* pruning-kb: small helpers for every page.
   - A "Copy" button on each <pre data-copy-label> block (BibTeX entries, the citation).
   - On the open-challenges page, a link to #<paper> opens that paper's folded note. */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) { return navigator.clipboard.writeText(text); }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.top = "0";
      area.style.left = "0";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  function addCopyButtons() {
    document.querySelectorAll("pre[data-copy-label]").forEach(function (pre) {
      if (pre.parentNode.classList && pre.parentNode.classList.contains("kb-copyable")) { return; }
      var label = pre.getAttribute("data-copy-label");
      var wrap = document.createElement("div");
      wrap.className = "kb-copyable";
      pre.parentNode.insertBefore(wrap, pre);
      wrap.appendChild(pre);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "kb-copy";
      button.textContent = label;
      var status = document.createElement("span");
      status.className = "kb-sr";
      status.setAttribute("aria-live", "polite");
      button.addEventListener("click", function () {
        copyText(pre.textContent).then(function () {
          button.textContent = "Copied";
          status.textContent = "Copied to the clipboard";
        }, function () {
          button.textContent = "Select and copy by hand";
          status.textContent = "Copying failed";
        });
        window.setTimeout(function () { button.textContent = label; status.textContent = ""; }, 2000);
      });
      wrap.appendChild(button);
      wrap.appendChild(status);
    });
  }

  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) { return; }
    var target = document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  function init() {
    addCopyButtons();
    openTarget();
    window.addEventListener("hashchange", openTarget);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
}());
