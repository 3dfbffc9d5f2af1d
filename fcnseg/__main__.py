from fcnseg.cli import app

app(prog_name="fcnseg")
