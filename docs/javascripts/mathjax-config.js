// MathJax 2 on the Markdown pages that have formulas (build_tools/site_hooks.py loads it there, bundled
// from node_modules): typeset only what pymdownx.arithmatex marked, \( … \) inline and \[ … \] displayed.
// The notebook pages configure their own MathJax (nbconvert's $ … $).
window.MathJax = {
  tex2jax: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: false,
    ignoreClass: ".*",
    processClass: "arithmatex",
  },
  messageStyle: "none",
  CommonHTML: { linebreaks: { automatic: true } },
};
