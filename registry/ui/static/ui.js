// Copy buttons: the pull command goes to the clipboard, and the page says so.
"use strict";
function copyCommand(button) {
  var input = document.getElementById(button.getAttribute("data-copy"));
  var said = button.parentNode.querySelector(".copied");
  if (!input) { return; }
  function done(ok) { if (said) { said.textContent = ok ? "Copied" : "Select and copy the text"; } }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(function () { done(true); }, function () {
      input.select(); done(document.execCommand("copy"));
    });
  } else {
    input.select();
    done(document.execCommand("copy"));
  }
}
document.addEventListener("click", function (event) {
  var target = event.target;
  if (target instanceof HTMLElement && target.classList.contains("copy")) { copyCommand(target); }
});
