// Typeset the formulas that pymdownx.arithmatex (generic mode) leaves as \( \) and \[ \]
// inside .arithmatex elements, on the first load and after every instant page change.
document$.subscribe(({ body }) => {
  body.querySelectorAll(".arithmatex").forEach((element) => {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  });
});
