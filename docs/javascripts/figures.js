// A notebook figure is drawn at the content's width (on a phone, much smaller than the PNG): a click or a
// tap opens it full size in a new tab. The figure is embedded in the page as a data: URL, which browsers
// refuse to open as a page, so the click opens the same bytes as a blob: URL instead.
(() => {
  const blobUrl = (dataUrl) => {
    const [header, payload] = dataUrl.split(",", 2);
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return URL.createObjectURL(new Blob([bytes], { type: header.slice(5).split(";")[0] }));
  };

  for (const image of document.querySelectorAll(".jupyter-wrapper .jp-RenderedImage img[src^='data:image/']")) {
    const link = document.createElement("a");
    link.className = "fmnist-figure-link";
    link.href = image.src;
    link.title = "Open the figure full size";
    link.addEventListener("click", (event) => {
      event.preventDefault();
      window.open(blobUrl(image.src), "_blank");
    });
    image.replaceWith(link);
    link.append(image);
  }
})();
