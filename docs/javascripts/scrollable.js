// Keyboard access to every block that scrolls: a code cell, an output or a table wider (or taller) than
// its box gets a tab stop, so arrow keys can scroll it, and a name that says what it is (axe-core's
// scrollable-region-focusable). Checked again when the width changes: a phone and a desktop overflow
// different blocks. A block that stops scrolling loses the tab stop this script gave it.
(() => {
  const CANDIDATES = [
    ".md-typeset pre", // code in Markdown, in a notebook's Markdown cells and in plain-text outputs
    ".md-typeset pre > code", // Material's code blocks scroll here
    ".md-typeset .md-typeset__scrollwrap", // Material's wide tables
    ".jupyter-wrapper .highlight-ipynb", // a notebook's code cells
    ".jupyter-wrapper .jp-OutputArea",
    ".jupyter-wrapper .jp-OutputArea-output",
    ".jupyter-wrapper .jp-RenderedHTMLCommon", // wide DataFrames
  ].join(", ");
  const MARK = "fmnistScrollable"; // data-fmnist-scrollable: the tab stop is ours to remove

  const scrolls = (element) => {
    const style = getComputedStyle(element);
    const sideways = /(auto|scroll)/.test(style.overflowX) && element.scrollWidth > element.clientWidth + 1;
    const down = /(auto|scroll)/.test(style.overflowY) && element.scrollHeight > element.clientHeight + 1;
    return sideways || down;
  };

  const name = (element) => {
    if (element.closest(".jp-OutputArea")) return "Cell output (scrollable)";
    if (element.querySelector("table") || element.matches(".md-typeset__scrollwrap")) return "Table (scrollable)";
    return "Code (scrollable)";
  };

  const update = () => {
    for (const element of document.querySelectorAll(CANDIDATES)) {
      const ours = MARK in element.dataset;
      if (scrolls(element)) {
        if (element.hasAttribute("tabindex") && !ours) continue; // focusable already (Material, nbconvert)
        element.tabIndex = 0;
        element.setAttribute("role", "group");
        element.setAttribute("aria-label", name(element));
        element.dataset[MARK] = "";
      } else if (ours) {
        element.removeAttribute("tabindex");
        element.removeAttribute("role");
        element.removeAttribute("aria-label");
        delete element.dataset[MARK];
      }
    }
  };

  let width = window.innerWidth;
  update();
  window.addEventListener("load", () => {
    update(); // the figures have their size now; the formulas once MathJax has typeset them
    if (window.MathJax && window.MathJax.Hub) window.MathJax.Hub.Register.StartupHook("End", update);
  });
  window.addEventListener("resize", () => {
    if (window.innerWidth === width) return;
    width = window.innerWidth;
    update();
  });
})();
