// The console's script: no inline script anywhere (CSP script-src 'self'); pages mark what they
// need with data- attributes and this file wires it up.
"use strict";
