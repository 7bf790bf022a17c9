// Steps in Swagger UI at /docs, driven by tests/test_openapi.py: the test types with the
// browser's own input events (Input.insertText) into the field each step focuses.
window.docsTest = (() => {
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const until = async (find, what, ms = 15000) => {
        const end = Date.now() + ms;
        while (Date.now() < end) {
            const found = find();
            if (found) return found;
            await sleep(50);
        }
        throw new Error(`no ${what} after ${ms} ms`);
    };
    const blocks = () => [...document.querySelectorAll('.opblock')];
    return {
        // How many operations the page shows, once it shows them.
        operations: async () => (await until(() => blocks().length, 'operations')),
        // The id of operation `i` (operations-default-<operationId>).
        id: (i) => blocks()[i].id,
        // How many operations show a padlock, and whether the page has an Authorize button.
        padlocks: () => document.querySelectorAll('.opblock .authorization__btn').length,
        authorizeButton: () => document.querySelector('.btn.authorize') !== null,
        // Opens the Authorize dialog and focuses its key field.
        openAuthorize: async () => {
            document.querySelector('.btn.authorize').click();
            (await until(() => document.querySelector('.modal-ux input'), 'key field')).focus();
        },
        closeAuthorize: async () => {
            (await until(() => document.querySelector('.modal-ux button.authorize'), 'authorize')).click();
            (await until(() => document.querySelector('.modal-ux button.btn-done'), 'close')).click();
            return document.querySelector('.btn.authorize').className;
        },
        // Opens operation `i` and its "Try it out"; the names of its empty parameters.
        tryOut: async (i) => {
            const block = blocks()[i];
            block.querySelector('.opblock-summary-control').click();
            (await until(() => block.querySelector('.try-out__btn'), `Try it out in ${block.id}`)).click();
            await until(() => block.querySelector('.execute'), `Execute in ${block.id}`);
            return [...block.querySelectorAll('tr[data-param-name]')]
                .filter((row) => row.querySelector('input') && !row.querySelector('input').value)
                .map((row) => row.getAttribute('data-param-name'));
        },
        focus: (i, name) => {
            blocks()[i].querySelector(`tr[data-param-name="${name}"] input`).focus();
        },
        // Parameter fields hand their value on after a debounce (react-debounce-input):
        // once every field is typed, one wait lets all of them settle.
        settle: () => sleep(700),
        // Executes operation `i`: [its id, the status shown, the body shown].
        execute: async (i) => {
            const block = blocks()[i];
            block.querySelector('.execute').click();
            const status = await until(() => {
                const cell = block.querySelector('.live-responses-table tr.response .response-col_status');
                return cell && cell.textContent.trim();
            }, `an answer in ${block.id}`);
            const body = block.querySelector('.live-responses-table .response-col_description pre');
            return [block.id, status, body ? body.textContent : ''];
        },
    };
})();
