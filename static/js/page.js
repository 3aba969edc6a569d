/* Behaviour every page shares, kept out of the HTML so that the Content-Security-Policy can forbid
   inline scripts, event-handler attributes and style attributes:
   - data-colour="<css colour>" becomes the element's --c custom property (a label class's colour),
     set through the CSSOM, which the policy allows (a colour that is not one is simply ignored);
   - <select data-autosubmit> submits its form when changed. */
(function () {
  "use strict";

  function applyColours(root) {
    for (const el of root.querySelectorAll("[data-colour]")) el.style.setProperty("--c", el.dataset.colour);
  }

  function ready() {
    applyColours(document);
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form && select.form.submit());
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
