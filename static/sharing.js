// The owner's Sharing page: the chosen-password field shows only when the owner chooses one;
// Copy buttons copy the field their data-copy names. Plain DOM, no build step.
(function () {
  "use strict";

  // The "password you choose" field matters only when the owner chooses one.
  const choice = document.querySelectorAll("input[name=password_choice]");
  const chosen = document.getElementById("id_password");
  function showChosen() {
    const field = chosen && chosen.closest(".field");
    const choose = Array.from(choice).some((r) => r.checked && r.value === "choose");
    if (field) field.hidden = !choose && !field.classList.contains("has-error");
  }
  choice.forEach((radio) => radio.addEventListener("change", showChosen));
  showChosen();
  document.querySelectorAll("[data-copy]").forEach((button) => button.addEventListener("click", () => {
    const input = document.querySelector(button.dataset.copy);
    input.select();
    (navigator.clipboard ? navigator.clipboard.writeText(input.value) : Promise.reject()).then(
      () => { button.textContent = "Copied"; }, () => document.execCommand("copy"));
  }));
})();
