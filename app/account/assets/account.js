// Sends the page's token to the API (same origin) and says how it went.
// Kept out of the HTML so the page needs no inline script (see the CSP).
"use strict";

(function () {
  const form = document.getElementById("flow");
  const result = document.getElementById("result");
  const tokenNode = document.getElementById("token");
  if (!form || !tokenNode) {
    return;
  }
  const endpoint = document.querySelector("main").dataset.endpoint;
  const token = tokenNode.textContent;

  function show(text, kind) {
    result.textContent = text;
    result.className = kind;
  }

  async function problemText(response) {
    try {
      const problem = await response.json();
      const details = (problem.errors || []).map((error) => error.msg);
      return [problem.detail].concat(details).join(" ");
    } catch (error) {
      return "The service answered " + response.status + ".";
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const body = { token: token };
    const password = document.getElementById("new-password");
    if (password) {
      if (password.value !== document.getElementById("repeat-password").value) {
        show("The two passwords differ.", "problem");
        return;
      }
      body.new_password = password.value;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    show("Sending...", "");
    try {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (response.ok) {
        show(password ? "Your password is changed: sign in with it." : "Your email address is verified.", "done");
        form.hidden = true;
        return;
      }
      show(await problemText(response), "problem");
    } catch (error) {
      show("The service could not be reached; try again.", "problem");
    }
    button.disabled = false;
  });
})();
