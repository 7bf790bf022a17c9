-- The rule for weak secrets, generated from sessions/weak_secrets.py by `make docs`: edit
-- that file, not this one. sessions/secrets.lua applies it; tests/test_security.py keeps
-- this file current and both sides' verdicts equal.
return {
    MIN_LENGTH = 16,
    RULE = 'at least 16 characters, spaces not counted, and neither a sample value ' ..
        '(`change-me...`) nor a common password',
    SAMPLE_PREFIX = 'changeme',
    -- Characters that never count, each as its UTF-8 bytes.
    SPACES = {
        '\9', '\10', '\11', '\12', '\13', ' ', '\28', '\29', '\30', '\31', '\194\133', '\194\160',
        '\225\154\128', '\226\128\128', '\226\128\129', '\226\128\130', '\226\128\131',
        '\226\128\132', '\226\128\133', '\226\128\134', '\226\128\135', '\226\128\136',
        '\226\128\137', '\226\128\138', '\226\128\139', '\226\128\140', '\226\128\141',
        '\226\128\168', '\226\128\169', '\226\128\175', '\226\129\159', '\226\129\160',
        '\227\128\128', '\239\187\191',
    },
    -- Left out too when a value is compared with COMMON.
    PUNCTUATION = {
        '!', '"', '#', '$', '%', '&', '\39', '(', ')', '*', '+', ',', '-', '.', '/', ':', ';', '<',
        '=', '>', '?', '@', '[', '\92', ']', '^', '_', '`', '{', '|', '}', '~', '\226\128\144',
        '\226\128\145', '\226\128\146', '\226\128\147', '\226\128\148', '\226\128\149',
        '\226\136\146',
    },
    -- Common passwords, folded.
    COMMON = {
        ['000000'] = true, ['0000000000000000'] = true, ['0987654321'] = true, ['111111'] = true,
        ['1111111111111111'] = true, ['112233'] = true, ['121212'] = true, ['123123'] = true,
        ['123321'] = true, ['12345'] = true, ['123456'] = true, ['1234567'] = true,
        ['12345678'] = true, ['123456789'] = true, ['1234567890'] = true,
        ['1234567890123456'] = true, ['12345678901234567890'] = true, ['1q2w3e4r'] = true,
        ['1q2w3e4r5t'] = true, ['1qaz2wsx'] = true, ['654321'] = true, ['666666'] = true,
        ['696969'] = true, ['987654321'] = true, ['abc123'] = true, ['abcd1234'] = true,
        ['abcdef'] = true, ['abcdefgh'] = true, ['abcdefghijklmnop'] = true,
        ['abcdefghijklmnopqrstuvwxyz'] = true, ['access'] = true, ['admin'] = true,
        ['admin123'] = true, ['administrator'] = true, ['apikey'] = true, ['asdfgh'] = true,
        ['asdfghjkl'] = true, ['azerty'] = true, ['baseball'] = true, ['batman'] = true,
        ['bearer'] = true, ['changeme'] = true, ['changethis'] = true,
        ['correcthorsebatterystaple'] = true, ['default'] = true, ['demo'] = true,
        ['dragon'] = true, ['example'] = true, ['football'] = true, ['freedom'] = true,
        ['guest'] = true, ['hello'] = true, ['hello123'] = true, ['iloveyou'] = true,
        ['iloveyouiloveyou'] = true, ['letmein'] = true, ['letmein123'] = true, ['login'] = true,
        ['master'] = true, ['michael'] = true, ['monkey'] = true, ['mustang'] = true,
        ['mysecret'] = true, ['opensesame'] = true, ['pass'] = true, ['pass123'] = true,
        ['passpass'] = true, ['passw0rd'] = true, ['password'] = true, ['password1'] = true,
        ['password12'] = true, ['password123'] = true, ['password1234'] = true,
        ['passwordpassword'] = true, ['princess'] = true, ['pssw0rd'] = true, ['qazwsx'] = true,
        ['qweasdzxc'] = true, ['qwerty'] = true, ['qwerty123'] = true, ['qwertyuiop'] = true,
        ['qwertyuiopasdfgh'] = true, ['qwertyuiopasdfghjkl'] = true, ['root'] = true,
        ['sample'] = true, ['secret'] = true, ['secret123'] = true, ['sessions'] = true,
        ['shadow'] = true, ['starwars'] = true, ['sunshine'] = true, ['superman'] = true,
        ['supersecret'] = true, ['tarantool'] = true, ['test'] = true, ['test123'] = true,
        ['testing'] = true, ['testtest'] = true, ['token'] = true, ['toor'] = true,
        ['topsecret'] = true, ['trustno1'] = true, ['welcome'] = true, ['welcome1'] = true,
        ['welcome123'] = true, ['whatever'] = true, ['zaq12wsx'] = true, ['zxcvbnm'] = true,
    },
}
