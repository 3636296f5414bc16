// The embeddable chat button. A host page adds one tag:
//   <script src="https://<webim>/widget.js" data-seller="seller-7" data-seller-name="Marta's Bikes" async></script>
// Optional: data-token-url (the host site's endpoint returning {"token"} for its signed-in user;
// without it the buyer chats as an anonymous visitor, recognised when they come back);
// data-title-count (the widget may put the unread count in the host page's title, "(2) <title>",
// while there are unread messages; without it the host's title is never touched).
// A classic script (not a module) so that it can read its own tag; the rest loads as modules.
(function () {
  var script = document.currentScript;
  if (!script || !script.dataset.seller) {
    console.error("webim widget: the script tag needs data-seller");
    return;
  }
  var base = new URL("./", script.src);
  import(new URL("app/widget-app.js", base).href)
    .then(function (module) {
      module.mountWidget({
        base: base,
        seller: { kind: "user", id: script.dataset.seller },
        sellerName: script.dataset.sellerName || script.dataset.seller,
        hostTokenUrl: script.dataset.tokenUrl || null,
        titleCount: script.hasAttribute("data-title-count") && script.dataset.titleCount !== "false",
      });
    })
    .catch(function (error) { console.error("webim widget failed to load", error); });
})();
