from esm_tcav.cli import app

app(prog_name="esm-tcav")
