/* The citizen picker's filter: hides the cards (and emptied households) that do not match. */
(function () {
  "use strict";
  var box = document.getElementById("fc-filter");
  if (!box) { return; }
  box.addEventListener("input", function () {
    var words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    document.querySelectorAll(".fc-household").forEach(function (household) {
      var shown = 0;
      household.querySelectorAll(".fc-card").forEach(function (card) {
        var text = household.dataset.search + " " + card.dataset.search;
        var match = words.every(function (w) { return text.indexOf(w) !== -1; });
        card.hidden = !match;
        if (match) { shown += 1; }
      });
      household.hidden = shown === 0;
    });
  });
}());
